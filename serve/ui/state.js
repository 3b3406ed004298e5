// What the page's modules share: its state, its polling loops, and a hook for errors.

export const $ = (id) => document.getElementById(id);
export const KEEP_SAMPLES_MS = 5 * 60 * 1000;

export const state = {
  me: null,
  root: null, // the tree last shown
  patchedAt: 0, // when a decision was last shown ahead of a snapshot
  nodes: new Map(), // actor name -> last node seen
  changes: new Map(), // actor name -> {at, what}
  decisions: [],
  agents: [],
  current: new Map(), // agent id -> task it runs
  tasks: [],
  progress: new Map(), // task id -> {progress, message}
  samples: [],
  detail: null, // {kind: "task" | "project", id}
  stream: null,
  loops: [],
  failing: new Map(), // loop name -> error, while the API does not answer it
  streamState: { name: "idle" },
};

export const can = (scope) => {
  const rank = { read: 1, write: 2, admin: 3 };
  return Math.max(0, ...(state.me?.scopes ?? []).map((s) => rank[s] ?? 0)) >= rank[scope];
};

/** The polling loops by panel (`tree`, `metrics`, ...), each with `kick(waitMs)`. */
export const loops = {};

/** `onError(error, where)`: true if the error ended the session (set by app.js). */
export const hooks = { onError: () => false };
