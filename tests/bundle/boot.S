/* Multiboot 1 entry of the bundle test kernel: the header the loader looks
 * for in the first 8 KiB, a stack, and a call to kmain(magic, info). */

#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003 /* bit 0: page-align modules; bit 1: give memory info */

	.section .multiboot, "a"
	.align 4
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.section .bss
	.align 16
stack_bottom:
	.skip 16384
stack_top:

	.section .text
	.globl _start
_start:
	mov $stack_top, %esp
	push %ebx /* the Multiboot information structure */
	push %eax /* the loader's magic, 0x2BADB002 */
	call kmain
halt:
	cli
	hlt
	jmp halt

	.section .note.GNU-stack, "", @progbits
