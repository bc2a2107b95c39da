/**
 * SIGTERM / SIGINT → an AbortSignal, for the long-running verbs: the job checkpoints and exits
 * instead of dying mid-write (a Spot reclaim sends SIGTERM two minutes before the kill).
 */
export interface SignalAbort {
  readonly signal: AbortSignal;
  /** Removes the handlers (call in `finally`). */
  dispose(): void;
}

export function abortOnSignals(): SignalAbort {
  const ac = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => ac.abort(new Error(sig));
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  return {
    signal: ac.signal,
    dispose: () => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    },
  };
}
