/**
 * The failure recorder as its own Lambda entry (`handler`), for deployments that give each
 * function its own module; the same function as `notify/handler.ts` `recordFailure`.
 */
export { recordFailure as handler } from './handler.ts';
