// The `lz4` npm package (0.6.x) ships no types. These are the block functions the project uses
// (LZ4_compress_default / LZ4_decompress_safe behind its native binding).
declare module 'lz4' {
  /** Worst-case compressed size of `inputLength` bytes. */
  export function encodeBound(inputLength: number): number;
  /** Compresses `input` into `output[outStart, outEnd)`; returns the compressed length, 0 if it does not fit. */
  export function encodeBlock(input: Buffer, output: Buffer, outStart?: number, outEnd?: number): number;
  /** Decompresses `input` into `output`; returns the decompressed length, negative if `input` is not a valid block. */
  export function decodeBlock(input: Buffer, output: Buffer): number;
}
