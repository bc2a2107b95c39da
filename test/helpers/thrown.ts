/** The error `fn` throws, checked to be an instance of `type` carrying its stable `name`. */
import { expect } from 'vitest';

export function thrown<E extends Error>(fn: () => unknown, type: abstract new (...args: never[]) => E): E {
  let err: unknown = null;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(type);
  expect((err as E).name).toBe(type.name);
  return err as E;
}
