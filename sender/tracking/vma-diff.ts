// What changed between two reads of /proc/PID/maps, VMA by VMA.
//
// VMAs are matched by start address: same start and every maps field equal = unchanged; same
// start, anything else different (end: grown/shrunk/split; perms: mprotect; offset/inode/path: a
// different object mapped there) = changed; a start only before = removed; only after = added.
// The maps text cannot show a VMA munmapped and mapped again identically at the same place; the
// tracker notices that one because the new VMA is not registered (tracking/registration.ts).

import type { Vma } from '../../common/vma';

export interface VmaDiff {
  added: Vma[];
  removed: Vma[];
  changed: { before: Vma; after: Vma }[];
  unchanged: Vma[];
}

/** Every field /proc/PID/maps shows is equal. */
export function sameVma(a: Vma, b: Vma): boolean {
  return a.start === b.start && a.end === b.end && a.perms === b.perms && a.offset === b.offset && a.dev === b.dev && a.inode === b.inode && a.path === b.path;
}

export function diffVmas(before: readonly Vma[], after: readonly Vma[]): VmaDiff {
  const byStart = new Map<number, Vma>();
  for (const v of before) byStart.set(v.start, v);
  const diff: VmaDiff = { added: [], removed: [], changed: [], unchanged: [] };
  const matched = new Set<number>();
  for (const v of after) {
    const old = byStart.get(v.start);
    if (old === undefined) {
      diff.added.push(v);
      continue;
    }
    matched.add(v.start);
    if (sameVma(old, v)) diff.unchanged.push(v);
    else diff.changed.push({ before: old, after: v });
  }
  for (const v of before) if (!matched.has(v.start)) diff.removed.push(v);
  return diff;
}
