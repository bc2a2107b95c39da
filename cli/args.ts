/** Argument parsers for the CLI: each rejects with one line naming the argument and what is allowed. */
import { InvalidArgumentError } from 'commander';

export function intArg(name: string, min: number, max = Number.MAX_SAFE_INTEGER): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be an integer in [${min}, ${max}], got '${v}'`);
    }
    return n;
  };
}

export function numberArg(name: string, min: number, max = Infinity, minExclusive = false): (v: string) => number {
  return (v) => {
    const n = Number(v);
    const low = minExclusive ? n > min : n >= min;
    if (v.trim() === '' || !Number.isFinite(n) || !low || n > max) {
      const range = `${minExclusive ? '(' : '['}${min}, ${max === Infinity ? '∞)' : `${max}]`}`;
      throw new InvalidArgumentError(`${name} must be a number in ${range}, got '${v}'`);
    }
    return n;
  };
}

export function choiceArg<T extends string>(name: string, allowed: readonly T[]): (v: string) => T {
  return (v) => {
    if (!(allowed as readonly string[]).includes(v)) {
      throw new InvalidArgumentError(`${name} must be one of ${allowed.join(', ')}, got '${v}'`);
    }
    return v as T;
  };
}
