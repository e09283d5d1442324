// x86_64 struct user_regs_struct (sys/user.h), which is also the layout of elf_gregset_t in a
// core file's NT_PRSTATUS: 27 unsigned longs in this order.

export const X86_64_REG_NAMES = [
  'r15',
  'r14',
  'r13',
  'r12',
  'rbp',
  'rbx',
  'r11',
  'r10',
  'r9',
  'r8',
  'rax',
  'rcx',
  'rdx',
  'rsi',
  'rdi',
  'orig_rax',
  'rip',
  'cs',
  'eflags',
  'rsp',
  'ss',
  'fs_base',
  'gs_base',
  'ds',
  'es',
  'fs',
  'gs',
] as const;

export type X86Reg = (typeof X86_64_REG_NAMES)[number];

export const X86_64_REGS_BYTES = X86_64_REG_NAMES.length * 8;
/** struct user_fpregs_struct (FXSAVE area). */
export const X86_64_FPREGS_BYTES = 512;

/** Registers by name as hex strings, or undefined when regs is not an x86_64 user_regs_struct. */
export function decodeX86Regs(regs: Buffer): Record<X86Reg, string> | undefined {
  if (regs.length !== X86_64_REGS_BYTES) return undefined;
  const out = {} as Record<X86Reg, string>;
  X86_64_REG_NAMES.forEach((name, i) => (out[name] = `0x${regs.readBigUInt64LE(i * 8).toString(16)}`));
  return out;
}
