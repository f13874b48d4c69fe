// Page-aligned buffers, for writes that bypass the page cache (O_DIRECT). node cannot align a
// Buffer, but a WebAssembly.Memory is allocated whole pages at a time: its bytes start on a page
// boundary (checked by the target's first direct write, which falls back to ordinary writes if not).

/** What O_DIRECT asks of memory, offsets and lengths here: a page (it also keeps direct and cached I/O off each other's pages). */
export const DIRECT_ALIGN = 4096;
/** WebAssembly pages are 64 KiB. */
const WASM_PAGE = 64 * 1024;

const aligned = new WeakSet<ArrayBufferLike>();

/** A buffer of `size` bytes starting on a page boundary; an ordinary one where WebAssembly is unavailable (node --jitless). */
export function alignedBuffer(size: number): Buffer {
  try {
    const mem = new WebAssembly.Memory({ initial: Math.ceil(size / WASM_PAGE) });
    aligned.add(mem.buffer);
    return Buffer.from(mem.buffer, 0, size);
  } catch {
    return Buffer.allocUnsafeSlow(size);
  }
}

/** True for a view of an alignedBuffer() that starts on a page boundary. */
export function isPageAligned(buf: Uint8Array): boolean {
  return aligned.has(buf.buffer) && buf.byteOffset % DIRECT_ALIGN === 0;
}
