# Minimal Multiboot v1 test kernel (a.out kludge, flat binary loaded at 1 MiB).
# Runs in 32-bit ring 0: prints "HB seq=N tsc=T" about every 10 ms (23M TSC
# ticks); if EXIT_AFTER != 0 it writes EXIT_VALUE to port 0xf4 (isa-debug-exit)
# after EXIT_AFTER heartbeats.
    .code32
base = 0x100000
hdr:
    .long 0x1BADB002
    .long 0x00010000
    .long -(0x1BADB002 + 0x00010000)
    .long base
    .long base
    .long 0
    .long 0
    .long base + (_start - hdr)
_start:
    mov $0x90000, %esp
    xor %ebx, %ebx
1:  cmp $EXIT_AFTER, %ebx
    jne 7f
    mov $EXIT_VALUE, %al
    mov $0xf4, %dx
    out %al, %dx
7:  mov $(base + (msg - hdr)), %esi
    call puts
    mov %ebx, %eax
    call putdec
    mov $(base + (msg2 - hdr)), %esi
    call puts
    rdtsc
    mov %eax, %ebp
    mov %edx, %eax
    call puthex
    mov %ebp, %eax
    call puthex
    mov $'\n', %al
    mov $0x3f8, %dx
    out %al, %dx
    inc %ebx
    rdtsc
    mov %eax, %edi
6:  rdtsc
    sub %edi, %eax
    cmp $23000000, %eax
    jb 6b
    jmp 1b
puts:
    lodsb
    test %al, %al
    jz 3f
    mov $0x3f8, %dx
    out %al, %dx
    jmp puts
3:  ret
putdec:
    mov $10, %ecx
    xor %edi, %edi
4:  xor %edx, %edx
    div %ecx
    push %edx
    inc %edi
    test %eax, %eax
    jnz 4b
5:  pop %eax
    add $'0', %al
    mov $0x3f8, %dx
    out %al, %dx
    dec %edi
    jnz 5b
    ret
puthex:
    mov $8, %ecx
    mov %eax, %edi
8:  rol $4, %edi
    mov %edi, %eax
    and $15, %eax
    add $'0', %al
    cmp $'9', %al
    jbe 9f
    add $('a' - '9' - 1), %al
9:  mov $0x3f8, %dx
    out %al, %dx
    dec %ecx
    jnz 8b
    ret
msg: .asciz "HB seq="
msg2: .asciz " tsc="
