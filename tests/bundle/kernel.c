/*
 * The bundle test kernel: reports on COM1 what the loader handed it, so the
 * tests can compare it with the bundle's inputs, then exits qemu through the
 * isa-debug-exit device.  Output, one item a line:
 *
 *   @@BUNDLE-BEGIN@@
 *   magic 2badb002
 *   cmdline <the command line>
 *   modules <count>
 *   module <i> <length> <sha-256 hex> <module string>
 *   @@BUNDLE-END@@
 */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

#define COM1 0x3F8
#define COM_LSR 5           /* line status register */
#define LSR_THR_EMPTY 0x20  /* transmitter holding register empty */
#define DEBUG_EXIT_PORT 0xF4
#define MB_INFO_CMDLINE (1u << 2)
#define MB_INFO_MODS (1u << 3)

struct mb_info {
	u32 flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
};

struct mb_module {
	u32 mod_start, mod_end, string, reserved;
};

static inline void outb(u16 port, u8 value)
{
	__asm__ volatile ("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline u8 inb(u16 port)
{
	u8 value;
	__asm__ volatile ("inb %1, %0" : "=a"(value) : "Nd"(port));
	return value;
}

static void putc(char c)
{
	while (!(inb(COM1 + COM_LSR) & LSR_THR_EMPTY))
		;
	outb(COM1, (u8)c);
}

static void puts(const char *s)
{
	while (*s)
		putc(*s++);
}

static void puthex(u32 v, int digits)
{
	static const char hex[] = "0123456789abcdef";
	while (digits--)
		putc(hex[(v >> (4 * digits)) & 0xF]);
}

static void putdec(u32 v)
{
	char buf[11];
	int i = 0;
	do {
		buf[i++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (i)
		putc(buf[--i]);
}

/* SHA-256 (FIPS 180-4), one pass over a buffer in memory. */

static const u32 K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(u32 h[8], const u8 *p)
{
	u32 w[64], a, b, c, d, e, f, g, hh;
	int i;
	for (i = 0; i < 16; i++)
		w[i] = (u32)p[4 * i] << 24 | (u32)p[4 * i + 1] << 16 | (u32)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (i = 16; i < 64; i++) {
		u32 s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
		u32 s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; hh = h[7];
	for (i = 0; i < 64; i++) {
		u32 t1 = hh + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
		u32 t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
	}
	h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static void sha256(const u8 *data, u32 len, u32 h[8])
{
	u8 tail[128];
	u32 i, rest, tail_len;
	static const u32 init[8] = {
		0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
		0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
	};
	for (i = 0; i < 8; i++)
		h[i] = init[i];
	for (i = 0; i + 64 <= len; i += 64)
		sha256_block(h, data + i);
	/* The last partial block, the 0x80 byte, zeros, and the bit length
	 * (64 bits, big-endian; our lengths fit in 32 bits, times 8 in 35). */
	rest = len - i;
	for (u32 j = 0; j < rest; j++)
		tail[j] = data[i + j];
	tail[rest] = 0x80;
	tail_len = rest + 1 + 8 <= 64 ? 64 : 128;
	for (u32 j = rest + 1; j < tail_len; j++)
		tail[j] = 0;
	tail[tail_len - 5] = (u8)(len >> 29);
	tail[tail_len - 4] = (u8)(len >> 21);
	tail[tail_len - 3] = (u8)(len >> 13);
	tail[tail_len - 2] = (u8)(len >> 5);
	tail[tail_len - 1] = (u8)(len << 3);
	for (u32 j = 0; j < tail_len; j += 64)
		sha256_block(h, tail + j);
}

static void exit_qemu(u8 code)
{
	/* isa-debug-exit: qemu exits with status (code << 1) | 1. */
	outb(DEBUG_EXIT_PORT, code);
}

void kmain(u32 magic, const struct mb_info *info)
{
	puts("\n@@BUNDLE-BEGIN@@\nmagic ");
	puthex(magic, 8);
	puts("\ncmdline ");
	if (info->flags & MB_INFO_CMDLINE)
		puts((const char *)info->cmdline);
	puts("\nmodules ");
	u32 count = info->flags & MB_INFO_MODS ? info->mods_count : 0;
	putdec(count);
	puts("\n");
	const struct mb_module *mods = (const struct mb_module *)info->mods_addr;
	for (u32 i = 0; i < count; i++) {
		u32 h[8];
		u32 len = mods[i].mod_end - mods[i].mod_start;
		sha256((const u8 *)mods[i].mod_start, len, h);
		puts("module ");
		putdec(i);
		putc(' ');
		putdec(len);
		putc(' ');
		for (int j = 0; j < 8; j++)
			puthex(h[j], 8);
		putc(' ');
		if (mods[i].string)
			puts((const char *)mods[i].string);
		puts("\n");
	}
	puts("@@BUNDLE-END@@\n");
	exit_qemu(0);
}
