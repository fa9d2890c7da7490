/*
 * list_images.c - find every image rumpfs baked into this program.
 *
 * Build (any target; rumpfs writes the object, gcc links it):
 *
 *	rumpfs pack rootfs/ -o root.o --image-format cpio --target aarch64
 *	rumpfs pack www/ -o www.o --image-format cpio --target aarch64 \
 *	    --name www --mount-point /var/www
 *	aarch64-linux-gnu-gcc -I "$(python3 -c 'import rumpfs, os; \
 *	    print(os.path.join(os.path.dirname(rumpfs.__file__), "data"))')" \
 *	    list_images.c root.o www.o -o list_images
 *
 * The program needs no component names: the linker collects the records of
 * all objects in the section rumpfs_images and defines __start_rumpfs_images
 * and __stop_rumpfs_images around them.  A kernel does the same walk and
 * mounts each image at its mount point (FFS in place, cpio extracted).
 */
#include <stdio.h>

#include "rumpfs_images.h"

static const char *format_name(unsigned int format)
{
	switch (format) {
	case RUMPFS_FMT_FFS1:	return "ffs1";
	case RUMPFS_FMT_FFS2:	return "ffs2";
	case RUMPFS_FMT_CPIO:	return "cpio";
	case RUMPFS_FMT_ISO:	return "iso9660";
	case RUMPFS_FMT_FAT:	return "fat";
	default:		return "raw";
	}
}

int main(void)
{
	const struct rumpfs_image *ri;
	int count = 0;

	RUMPFS_FOREACH_IMAGE(ri) {
		printf("%-16s %-8s %10llu bytes at %p, mount %s%s%s\n",
		    ri->ri_name, format_name(ri->ri_format),
		    (unsigned long long)ri->ri_size, ri->ri_image.ri_ptr,
		    ri->ri_mountpoint,
		    ri->ri_flags & RUMPFS_IMG_WRITABLE ? " read-write" : " read-only",
		    ri->ri_flags & RUMPFS_IMG_CONFIG ? ", with config" : "");
		count++;
	}
	if (count == 0)
		printf("no images linked in\n");
	return 0;
}
