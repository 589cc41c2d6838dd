/**
 * Errors a user can cause and fix. The CLI prints their message as one line and exits 1;
 * anything that is not an LwmError is a bug and is reported as such.
 * Messages name what is wrong, what was received, and what to do.
 */
export class LwmError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A model config or option has an invalid value. */
export class ConfigError extends LwmError {}

/** A checkpoint folder or weight file is missing, truncated, corrupt or does not match its config. */
export class CheckpointError extends LwmError {}

/** Input data (token ids, prompts, tensors) is out of range or has the wrong shape or dtype. */
export class InputError extends LwmError {}
