/*
 * Test program: find the images linked in, through the registry and through
 * the template symbols, and print them in hex so the test compares them with
 * the raw image bytes.  COMP1/COMP2 name the components (rumpfs template).
 */
#include <stdio.h>
#include <string.h>
#include "rumpfs_images.h"

#define CAT(a, b, c) a##b##c
#define SYM(n, s) CAT(rumpfs_, n, s)
#define STR_(x) #x
#define STR(x) STR_(x)

static void hex(const unsigned char *p, unsigned long long n)
{
	unsigned long long i;

	for (i = 0; i < n; i++)
		printf("%02x", p[i]);
	printf("\n");
}

#define SYMBOLS(n)							\
	extern const unsigned char SYM(n, _start)[], SYM(n, _end)[];	\
	extern const unsigned long SYM(n, _size);			\
	static void show_##n(void)					\
	{								\
		printf("symbols %s size=%lu span=%lu\n", STR(n),	\
		    SYM(n, _size),					\
		    (unsigned long)(SYM(n, _end) - SYM(n, _start)));	\
		hex(SYM(n, _start), SYM(n, _size));			\
	}

#ifdef COMP1
SYMBOLS(COMP1)
#endif
#ifdef COMP2
SYMBOLS(COMP2)
#endif

int main(void)
{
	const struct rumpfs_image *ri;
	int n = 0;

	RUMPFS_FOREACH_IMAGE(ri) {
		printf("record %s format=%u flags=%u mount=%s version=%u size=%llu\n",
		    ri->ri_name, ri->ri_format, ri->ri_flags, ri->ri_mountpoint,
		    ri->ri_version, (unsigned long long)ri->ri_size);
		hex(ri->ri_image.ri_ptr, ri->ri_size);
		n++;
	}
	printf("records %d\n", n);
#ifdef COMP1
	show_COMP1();
#endif
#ifdef COMP2
	show_COMP2();
#endif
	return 0;
}
