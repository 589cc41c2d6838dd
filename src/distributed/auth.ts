/**
 * Challenge/response authentication of ring peers with HMAC-SHA256 over a shared secret.
 * It proves that a peer holds LWM_RING_SECRET; it does not encrypt anything: block contents and
 * the control messages travel in clear text, so use a trusted network (or a tunnel) across hosts.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export function nonce(): string {
  return randomBytes(16).toString('hex');
}

/** An empty string when there is no secret: the peers then only identify, not authenticate. */
export function mac(secret: string | null, ...parts: (string | number)[]): string {
  if (secret === null) return '';
  return createHmac('sha256', secret).update(parts.join('\u0000')).digest('hex');
}

export function macOk(secret: string | null, got: unknown, ...parts: (string | number)[]): boolean {
  if (secret === null) return true;
  if (typeof got !== 'string') return false;
  const want = Buffer.from(mac(secret, ...parts), 'hex');
  const have = Buffer.from(got, 'hex');
  return have.length === want.length && timingSafeEqual(have, want);
}
