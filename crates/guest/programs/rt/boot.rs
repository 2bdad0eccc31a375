//! Ring-0 boot path: Multiboot header, 32-bit entry, long mode, ring 3.
//!
//! Ring-0 code is emulated on kvm-pvm (~0.7 µs per instruction), so this
//! does as little as possible: the page tables, GDT and TSS (with its I/O
//! permission bitmap) are static data computed at link time; the IDT is
//! filled later from ring 3 (its page is user-writable). The AP trampoline
//! is copied to 0x8000 from ring 3 too.

/// Most vCPUs the guest uses (more are left parked in the firmware).
pub const MAX_CPUS: usize = 16;
/// Where the AP trampoline runs (real mode, page-aligned, below 1 MiB).
pub const TRAMPOLINE: usize = 0x8000;
/// Virtual base of the heap: all usable RAM mapped contiguously here.
pub const HEAP_VA: usize = 64 << 30;
/// Heap page directories (512 x 2 MiB each): 32 GiB of RAM at most.
pub const HEAP_PDS: usize = 32;

core::arch::global_asm!(
    r#"
    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0x00010002
    .set KSTACK, 4096
    .set MAXCPU, {maxcpu}
    .set TSS_LIMIT, 104 + 128

    /* The steps the BSP (from 32-bit protected mode) and the AP trampoline
       (from real mode) share. The macros expand in place, so the copied
       trampoline stays self-contained. */

    /* Paging on with long mode: CR4 PAE, OSFXSR, OSXMMEXCPT; CR3 the
       static tables; EFER.LME; CR0 PE, MP, PG with caching on and EM off. */
    .macro enable_long_mode
    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4
    movl $rt_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    andl $0x9FFFFFFB, %eax
    orl $0x80000003, %eax
    movl %eax, %cr0
    .endm

    /* Kernel data selector into DS, ES and SS, after the far jump to 64-bit code. */
    .macro load_data_segments
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    .endm

    /* iretq to ring 3 at `entry` on `stack`, IOPL 0 and interrupts off. */
    .macro enter_ring3 stack, entry
    pushq $0x23
    pushq \stack
    pushq $0x2
    pushq $0x1b
    pushq \entry
    iretq
    .endm

    .section .multiboot, "a"
    .p2align 2
mb_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long mb_header
    .long __image_start
    .long __load_end
    .long __bss_end
    .long _start

    .section .text.boot, "ax"
    .code32
    .global _start
_start:
    cli
    movl %eax, rt_boot_magic
    movl %ebx, rt_boot_info
    rdtsc
    movl %eax, rt_boot_tsc
    movl %edx, rt_boot_tsc + 4
    # TSC kHz from the hypervisor timing leaf, read here in ring 0: on some
    # hosts (kvm-pvm) CPUID from ring 3 is not intercepted and shows the
    # outer host's leaves instead of the VMM's.
    movl $1, %eax
    cpuid
    btl $31, %ecx
    jnc 1f
    movl $0x40000000, %eax
    cpuid
    cmpl $0x40000010, %eax
    jb 1f
    movl $0x40000010, %eax
    cpuid
    movl %eax, rt_hv_tsc_khz
1:
    movl $rt_tss, %eax
    movw %ax, rt_gdt_tss + 2
    shrl $16, %eax
    movb %al, rt_gdt_tss + 4
    movb %ah, rt_gdt_tss + 7
    lgdt rt_gdtr
    enable_long_mode
    ljmp $0x08, $bsp_long

    .code64
bsp_long:
    load_data_segments
    movw $0x28, %ax
    ltr %ax
    lidt rt_idtr
    movq $rt_kstacks + KSTACK, %rsp
    enter_ring3 "$rt_ustack0 + {ustack} - 8", ${bsp_main}

    /* AP path: the trampoline jumps here in long mode, ring 0. */
ap_long:
    load_data_segments
    movl $1, %ebx
    lock xaddl %ebx, rt_ap_arrived
    incl %ebx
    cmpl rt_ap_limit, %ebx
    jae rt_park_stub
    movl %ebx, %ecx
    shll $4, %ecx
    addl $0x28, %ecx
    ltr %cx
    lidt rt_idtr
    movl %ebx, %ecx
    incl %ecx
    shll $12, %ecx
    leaq rt_kstacks(%rcx), %rsp
    movq rt_ap_ustack(,%rbx,8), %rax
    movq %rbx, %rdi
    enter_ring3 %rax, ${ap_main}

    /* Exception stubs: push a dummy error code where the CPU pushes none.
       The report is plain assembly with one-byte `out`s: ring 0 is emulated
       here, and the emulator fails on the SSE code compiled Rust contains.
       It first flushes what ring 3 left in the console buffer. */
    .p2align 4
rt_exc_common:
    movq %rsp, %rbx
    movw $0x3f8, %dx
    leaq {console}(%rip), %rsi
    movq {console} + {bufsize}(%rip), %rcx
    cmpq ${bufsize}, %rcx
    jbe .Lexc_flush
    movq ${bufsize}, %rcx
.Lexc_flush:
    testq %rcx, %rcx
    jz .Lexc_line
    movb (%rsi), %al
    outb %al, %dx
    incq %rsi
    decq %rcx
    jmp .Lexc_flush
.Lexc_line:
    leaq .Lmsg_vector(%rip), %rsi
    call .Lputs
    movq 0(%rbx), %rax
    call .Lputhex
    leaq .Lmsg_err(%rip), %rsi
    call .Lputs
    movq 8(%rbx), %rax
    call .Lputhex
    leaq .Lmsg_rip(%rip), %rsi
    call .Lputs
    movq 16(%rbx), %rax
    call .Lputhex
    movb $10, %al
    outb %al, %dx
    movl $0x7f, %eax
    movw $0xf4, %dx
    outl %eax, %dx
.Lexc_stop:
    pause
    jmp .Lexc_stop
.Lputs:
    movb (%rsi), %al
    testb %al, %al
    jz .Lputs_end
    outb %al, %dx
    incq %rsi
    jmp .Lputs
.Lputs_end:
    ret
    /* rax in hex with 0x and no leading zeros. */
.Lputhex:
    movq %rax, %r8
    movb $0x30, %al
    outb %al, %dx
    movb $0x78, %al
    outb %al, %dx
    movl $60, %ecx
    xorl %r9d, %r9d
.Lhex_digit:
    movq %r8, %rax
    shrq %cl, %rax
    andl $15, %eax
    testl %r9d, %r9d
    jnz .Lhex_out
    testl %eax, %eax
    jnz .Lhex_out
    testl %ecx, %ecx
    jnz .Lhex_next
.Lhex_out:
    movl $1, %r9d
    cmpl $10, %eax
    jb .Lhex_dec
    addl $39, %eax
.Lhex_dec:
    addl $0x30, %eax
    outb %al, %dx
.Lhex_next:
    subl $4, %ecx
    jns .Lhex_digit
    ret
.Lmsg_vector:
    .asciz "EXCEPTION vector="
.Lmsg_err:
    .asciz " err="
.Lmsg_rip:
    .asciz " rip="

    .irp n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    .p2align 4
rt_exc_\n:
    pushq $0
    pushq $\n
    jmp rt_exc_common
    .endr
    .irp n, 8,10,11,12,13,14,17,21,29,30
    .p2align 4
rt_exc_\n:
    pushq $\n
    jmp rt_exc_common
    .endr

    /* APs beyond the ones the guest uses wait here (ring 0, no stack). */
    .p2align 4
rt_park_stub:
    pause
    jmp rt_park_stub

    /* Real-mode AP trampoline, copied to 0x8000 from ring 3. */
    .code16
    .global rt_tramp_start
    .global rt_tramp_end
rt_tramp_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl (rt_tramp_gdtr - rt_tramp_start + {tramp})
    enable_long_mode
    ljmpl $0x08, $ap_long
    .p2align 2
rt_tramp_gdtr:
    .word rt_gdt_end - rt_gdt - 1
    .long rt_gdt
rt_tramp_end:
    .code64

    .section .rodata.rt_exc, "a"
    .p2align 3
    .global rt_exc_table
rt_exc_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad rt_exc_\n
    .endr

    .section .data.rt_boot, "aw"
    .p2align 4
    .global rt_gdt
    .global rt_gdt_tss
rt_gdt:
    .quad 0
    .quad 0x00209A0000000000
    .quad 0x00CF92000000FFFF
    .quad 0x0020FA0000000000
    .quad 0x00CFF2000000FFFF
rt_gdt_tss:
    .rept MAXCPU
    .quad 0x0000890000000000 + TSS_LIMIT
    .quad 0
    .endr
rt_gdt_end:
    .p2align 2
    .word 0
rt_gdtr:
    .word rt_gdt_end - rt_gdt - 1
    .long rt_gdt
    .p2align 3
    .word 0, 0, 0
rt_idtr:
    .word 256 * 16 - 1
    .quad rt_idt

    /* 64-bit TSS of the BSP; APs get copies at rt_tss + i * 256. */
    .p2align 8
    .global rt_tss
rt_tss:
    .long 0
    .quad rt_kstacks + KSTACK
    .quad 0, 0, 0
    .quad 0, 0, 0, 0, 0, 0, 0
    .quad 0
    .word 0
    .word 104
    /* I/O permission bitmap, ports 0-0x3ff; a clear bit allows the port:
       0x40-0x43 (PIT), 0x61 (PIT gate), 0xe0-0xe3 (idle), 0xf4-0xf7 (exit),
       0x3f8-0x3ff (UART). */
    .fill 8, 1, 0xff
    .byte 0xf0
    .fill 3, 1, 0xff
    .byte 0xfd
    .fill 15, 1, 0xff
    .byte 0xf0
    .byte 0xff
    .byte 0x0f
    .fill 96, 1, 0xff
    .byte 0x00
    .byte 0xff
    .p2align 8
    .fill (MAXCPU - 1) * 256, 1, 0

    /* Page tables: identity map of 0-4 GiB with 2 MiB user+writable pages,
       and the heap window at 64 GiB whose directories ring 3 fills. */
    .p2align 12
    .global rt_pml4
rt_pml4:
    .quad rt_pdpt + 7
    .fill 511, 8, 0
rt_pdpt:
    .quad rt_pd_ident + 0x0007
    .quad rt_pd_ident + 0x1007
    .quad rt_pd_ident + 0x2007
    .quad rt_pd_ident + 0x3007
    .fill 60, 8, 0
    .set pdoff, 0
    .rept {heap_pds}
    .quad rt_pd_heap + pdoff + 7
    .set pdoff, pdoff + 0x1000
    .endr
    .fill 512 - 64 - {heap_pds}, 8, 0
rt_pd_ident:
    .set pa, 0
    .rept 2048
    .quad pa + 0x87
    .set pa, pa + 0x200000
    .endr

    .section .bss.rt_boot, "aw", @nobits
    .p2align 12
    .global rt_pd_heap
rt_pd_heap:
    .skip {heap_pds} * 4096
    .global rt_idt
rt_idt:
    .skip 4096
    .global rt_kstacks
rt_kstacks:
    .skip (MAXCPU + 1) * KSTACK
    .p2align 4
    .global rt_ustack0
rt_ustack0:
    .skip {ustack}
    .p2align 3
    .global rt_ap_ustack
rt_ap_ustack:
    .skip MAXCPU * 8
    .p2align 3
    .global rt_boot_tsc
rt_boot_tsc:
    .skip 8
    .global rt_boot_magic
rt_boot_magic:
    .skip 4
    .global rt_hv_tsc_khz
rt_hv_tsc_khz:
    .skip 4
    .global rt_boot_info
rt_boot_info:
    .skip 4
    .global rt_ap_arrived
rt_ap_arrived:
    .skip 4
    .global rt_ap_limit
rt_ap_limit:
    .skip 4
"#,
    maxcpu = const MAX_CPUS,
    heap_pds = const HEAP_PDS,
    ustack = const USTACK,
    tramp = const TRAMPOLINE,
    bsp_main = sym super::entry::rt_bsp_main,
    ap_main = sym super::entry::rt_ap_main,
    bufsize = const super::console::BUF,
    console = sym super::console::CONSOLE,
    options(att_syntax)
);

/// Ring-3 stack of every vCPU.
pub const USTACK: usize = 256 * 1024;

unsafe extern "C" {
    pub static mut rt_idt: [u64; 512];
    pub static mut rt_gdt_tss: [u64; 2 * MAX_CPUS];
    pub static mut rt_tss: [u8; 256 * MAX_CPUS];
    pub static mut rt_pd_heap: [u64; 512 * HEAP_PDS];
    pub static mut rt_kstacks: [u8; 4096 * (MAX_CPUS + 1)];
    pub static mut rt_ap_ustack: [u64; MAX_CPUS];
    pub static rt_exc_table: [u64; 32];
    pub static rt_tramp_start: u8;
    pub static rt_tramp_end: u8;
    pub static rt_boot_magic: u32;
    pub static rt_hv_tsc_khz: u32;
    pub static rt_boot_tsc: u64;
    pub static rt_boot_info: u32;
    pub static rt_ap_arrived: core::sync::atomic::AtomicU32;
    pub static rt_ap_limit: core::sync::atomic::AtomicU32;
    pub static __bss_end: u8;
}
