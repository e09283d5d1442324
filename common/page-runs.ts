// Packed run lists: pages as (start address, page count) pairs in a flat number array, the form
// every layer passes page sets in (no per-page or per-run JS objects).

/** Append one page to a packed run list, extending the last run when contiguous. */
export function appendPage(out: number[], addr: number, pageSize: number): void {
  const k = out.length;
  if (k > 0 && out[k - 2] + out[k - 1] * pageSize === addr) out[k - 1]++;
  else out.push(addr, 1);
}
