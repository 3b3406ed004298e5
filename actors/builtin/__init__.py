"""Agents that ship with rayvisor; each is referenced by its class path (`module:Class`)."""
