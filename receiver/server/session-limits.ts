// The receiver's per-process and per-session limits (`receiver serve --max-sessions`,
// `--max-image-bytes`, `--max-rate`, `--max-message-bytes`): what they are, and the registry of
// sessions held by streams that enforces --max-sessions and finds the stream to take over when a
// sender resumes a session whose old stream this receiver still holds.
//
// A refusal is a StreamError RESOURCE_EXHAUSTED whose message names the flag, so the operator of
// the sender knows which knob the receiver's operator turned. The sender treats
// RESOURCE_EXHAUSTED as final (not retryable): retrying into the same limit cannot help.

import { formatBytes } from '../../common/units';
import { MAX_MESSAGE_BYTES } from './limits';
import { resourceExhausted } from './stream-error';

export interface ReceiverLimits {
  /** Sessions held by streams at once (receiving, or committed and awaiting the Report). */
  maxSessions: number;
  /** Pages (data and zero) one session's image may hold, in bytes; Infinity = unlimited. */
  maxImageBytes: number;
  /** Page bytes per second one session may write; Infinity = unlimited. */
  maxRateBytesPerSecond: number;
  /** Largest gRPC message accepted (grpc.max_receive_message_length). */
  maxMessageBytes: number;
}

export const DEFAULT_MAX_SESSIONS = 32;

export const DEFAULT_LIMITS: ReceiverLimits = {
  maxSessions: DEFAULT_MAX_SESSIONS,
  maxImageBytes: Infinity,
  maxRateBytesPerSecond: Infinity,
  maxMessageBytes: MAX_MESSAGE_BYTES,
};

/** The limits in words, for the receiver's startup log. */
export function describeLimits(l: ReceiverLimits): string {
  const size = (n: number) => (Number.isFinite(n) ? formatBytes(n) : 'unlimited');
  return `${l.maxSessions} sessions at once, images ${size(l.maxImageBytes)}, messages ${formatBytes(l.maxMessageBytes)}, ${Number.isFinite(l.maxRateBytesPerSecond) ? `${formatBytes(l.maxRateBytesPerSecond)}/s` : 'unlimited rate'} per session`;
}

/**
 * Which stream holds which session id. A claim is taken synchronously before the store opens the
 * session (two starts racing cannot both get the last slot) and dropped when the stream lets the
 * session go. A takeover replaces the holder of a claimed id: the slot passes from the stale stream
 * to the resuming one, so it never needs a free slot (and never loses the session to a newcomer).
 */
export class SessionSlots<H> {
  private readonly holders = new Map<string, H>();

  constructor(private readonly max: number) {}

  get size(): number {
    return this.holders.size;
  }

  holder(id: string): H | undefined {
    return this.holders.get(id);
  }

  /** Claim `id` for `who` (RESOURCE_EXHAUSTED when every slot is taken); replaces a holder being taken over. */
  claim(id: string, who: H): void {
    const current = this.holders.get(id);
    if (current === undefined && this.holders.size >= this.max) {
      throw resourceExhausted(`too many sessions at once (${this.max}; --max-sessions)`, 'too_many_sessions');
    }
    this.holders.set(id, who);
  }

  /** Drop `who`'s claim on `id` (nothing when another stream took the session over). */
  release(id: string, who: H): void {
    if (this.holders.get(id) === who) this.holders.delete(id);
  }
}

/**
 * --max-image-bytes for one session. Reading the exact page count of an image means counting its
 * bitmaps, too slow for every batch; so the budget keeps an upper bound (pages held when it was
 * last exact, plus every page sent since, re-sent ones included) and only asks for the exact
 * figure when that bound crosses the limit.
 */
export class ImageBudget {
  private readonly maxPages: number;
  private upper: number;

  constructor(
    private readonly maxBytes: number,
    private readonly sessionId: string,
    pageSize: number,
    heldPages: number,
  ) {
    this.maxPages = Math.floor(maxBytes / pageSize);
    this.upper = heldPages;
  }

  /** False when the batch may push the image past the limit and the exact check is needed. */
  fits(batchPages: number): boolean {
    if (this.upper + batchPages <= this.maxPages) {
      this.upper += batchPages;
      return true;
    }
    return false;
  }

  /** The exact check: `held` pages now, `added` of the batch's pages not held yet. */
  check(held: number, added: number): void {
    if (held + added > this.maxPages) {
      throw resourceExhausted(
        `session ${this.sessionId}: image would exceed ${formatBytes(this.maxBytes)} (--max-image-bytes): it holds ${held} pages, the batch adds ${added}, the limit is ${this.maxPages}`,
        'image_too_big',
      );
    }
    this.upper = held + added;
  }
}
