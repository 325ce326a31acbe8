// What the CLIs of this folder exit with: 1 when what they check is refused, 2 when they cannot run.

export class Failure extends Error {
  constructor(message, code) {
    super(message);
    this.exitCode = code;
  }
}
export const refused = (message) => new Failure(message, 1);
export const cannotRun = (message) => new Failure(message, 2);
