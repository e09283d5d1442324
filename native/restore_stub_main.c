/* precopy-restore-stub: the program a restored process starts as. It only waits (pause() in a
 * loop, raw syscalls, no libc): the restorer seizes it and rebuilds it from outside, unmapping
 * this program entirely. Static and tiny so that nothing (ld.so, libc, TLS, rseq, robust list)
 * sets up state that would then have to be undone. */
void _start(void) {
  for (;;) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(34L /* pause */) : "rcx", "r11", "memory");
    (void)r;
  }
}
