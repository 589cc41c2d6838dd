/**
 * Authentication of the data connections. A rank learns the session id only from rank 0's
 * authenticated table, so a MAC over (session, the receiver's fresh nonce) proves both the secret
 * and membership of this run; replaying an old hello fails on the nonce.
 */
import { mac, macOk, nonce } from './auth.js';

export class LinkSecret {
  constructor(
    readonly secret: string | null,
    readonly session: string,
    readonly rank: number,
  ) {}

  /** The receiving side checks a HELLO answering its challenge `challenge`. */
  helloOk(challenge: string, hello: Record<string, unknown>): boolean {
    return macOk(this.secret, hello['mac'], 'data', this.session, challenge, String(hello['rank']));
  }

  /** Proves the receiving rank holds the secret too, over the sender's nonce. */
  welcome(hello: Record<string, unknown>): { mac: string } {
    return { mac: mac(this.secret, 'welcome', this.session, String(hello['cnonce']), this.rank) };
  }
}

export function dataChallenge(): { nonce: string } {
  return { nonce: nonce() };
}

export function dataHello(link: LinkSecret, rank: number, challenge: Record<string, unknown>): { rank: number; cnonce: string; mac: string } {
  const cnonce = nonce();
  return { rank, cnonce, mac: mac(link.secret, 'data', link.session, String(challenge['nonce']), String(rank)) };
}

export function dataWelcomeOk(link: LinkSecret, next: number, cnonce: string, welcome: Record<string, unknown>): boolean {
  return macOk(link.secret, welcome['mac'], 'welcome', link.session, cnonce, next);
}
