// The link's security flags as the user gave them, to repeat in the `sender resolve` command a
// handover prints when its decision could not be learned.

import * as path from 'node:path';
import type { SecurityFlagValues } from '../../common/link-security';

export function securityFlagArgs(v: SecurityFlagValues): string[] {
  const out: string[] = [];
  for (const name of ['tls-ca', 'tls-cert', 'tls-key', 'token-file'] as const) {
    const value = v[name];
    if (value !== undefined) out.push(`--${name}`, path.resolve(value));
  }
  if (v['tls-server-name'] !== undefined) out.push('--tls-server-name', v['tls-server-name']);
  if (v.insecure) out.push('--insecure');
  return out;
}
