// A repeating call with backoff: polls that keep the page current without hammering an
// API that does not answer.

/**
 * Run `fn` now and every `periodMs` (jittered). `failed(error)` says whether to back off:
 * the delay doubles up to `maxMs`, and the next success (`ok()` follows it) brings the
 * period back. `kick(waitMs)` runs it sooner; `stop()` ends it.
 */
export function repeat(periodMs, fn, { ok, failed, maxMs = 30000 }) {
  const loop = { timer: null, soon: null, soonAt: 0, stopped: false, delay: periodMs };
  const run = async () => {
    if (loop.stopped) return;
    clearTimeout(loop.timer);
    try {
      await fn();
      loop.delay = periodMs;
      ok();
    } catch (error) {
      if (failed(error)) loop.delay = Math.min(maxMs, loop.delay * 2);
    }
    if (!loop.stopped) loop.timer = setTimeout(run, loop.delay * (0.9 + 0.2 * Math.random()));
  };
  /** Run within `waitMs` (calls meanwhile make one run, at the earliest time asked). */
  loop.kick = (waitMs = 150) => {
    if (loop.stopped) return;
    const due = Date.now() + waitMs;
    if (loop.soon && loop.soonAt <= due) return;
    clearTimeout(loop.soon);
    loop.soonAt = due;
    loop.soon = setTimeout(() => {
      loop.soon = null;
      run();
    }, waitMs);
  };
  loop.stop = () => {
    loop.stopped = true;
    clearTimeout(loop.timer);
    clearTimeout(loop.soon);
  };
  run();
  return loop;
}
