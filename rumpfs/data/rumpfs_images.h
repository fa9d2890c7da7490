/*
 * rumpfs_images.h - the registry of images baked in by rumpfs.
 *
 * Every object written by "rumpfs pack -o NAME.o" (or "rumpfs wrap") holds
 * one struct rumpfs_image in the section "rumpfs_images".  The linker puts
 * the records of all objects side by side and, because the section name is
 * a C identifier, GNU ld and lld define __start_rumpfs_images and
 * __stop_rumpfs_images around them.  A kernel walks the array and mounts
 * each image at ri_mountpoint, with no knowledge of the component names:
 *
 *	const struct rumpfs_image *ri;
 *	RUMPFS_FOREACH_IMAGE(ri)
 *		mount_image(ri->ri_image.ri_ptr, ri->ri_size, ri->ri_mountpoint);
 *
 * The layout is the same on every target: every field is at a multiple of
 * its size, the pointer sits in an 8-byte union (its first bytes on 32-bit
 * targets), and the record is 128 bytes.  Fields are in the target's byte
 * order.  With --gc-sections the records stay: ld keeps sections whose
 * __start_/__stop_ symbols are referenced.
 */
#ifndef RUMPFS_IMAGES_H
#define RUMPFS_IMAGES_H

#include <stdint.h>

#define RUMPFS_IMAGE_MAGIC	0x52465349u	/* "RFSI" */
#define RUMPFS_IMAGE_VERSION	1

/* ri_format */
#define RUMPFS_FMT_RAW		0	/* unknown bytes (rumpfs wrap) */
#define RUMPFS_FMT_FFS1		1	/* NetBSD FFS, UFS1 */
#define RUMPFS_FMT_FFS2		2	/* NetBSD FFS, UFS2 */
#define RUMPFS_FMT_CPIO		3	/* cpio newc (070701) */
#define RUMPFS_FMT_ISO		4	/* ISO 9660 */
#define RUMPFS_FMT_FAT		5	/* FAT */

/* ri_flags */
#define RUMPFS_IMG_WRITABLE	0x1	/* in a writable section: may be mounted read-write in place */
#define RUMPFS_IMG_CONFIG	0x2	/* carries a launch configuration */
#define RUMPFS_IMG_COMPRESSED	0x4	/* compressed (cpio: gzip, xz, zstd or lz4) */

#define RUMPFS_NAME_LEN		32
#define RUMPFS_MOUNTPOINT_LEN	64

struct rumpfs_image {
	uint32_t ri_magic;		/* RUMPFS_IMAGE_MAGIC */
	uint16_t ri_version;		/* RUMPFS_IMAGE_VERSION */
	uint16_t ri_format;		/* RUMPFS_FMT_* */
	uint32_t ri_flags;		/* RUMPFS_IMG_* */
	uint32_t ri_reclen;		/* sizeof(struct rumpfs_image) */
	uint64_t ri_size;		/* image size in bytes */
	union {
		void *ri_ptr;		/* the image (const unless RUMPFS_IMG_WRITABLE) */
		uint64_t ri_pad;
	} ri_image;
	char ri_name[RUMPFS_NAME_LEN];		/* component name (--name) */
	char ri_mountpoint[RUMPFS_MOUNTPOINT_LEN];	/* --mount-point, default "/" */
};

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct rumpfs_image) == 128, "struct rumpfs_image is 128 bytes");
#endif

extern const struct rumpfs_image __start_rumpfs_images[] __attribute__((weak, visibility("hidden")));
extern const struct rumpfs_image __stop_rumpfs_images[] __attribute__((weak, visibility("hidden")));

/* Every valid record, in link order. */
#define RUMPFS_FOREACH_IMAGE(ri)					\
	for ((ri) = __start_rumpfs_images; (ri) < __stop_rumpfs_images; (ri)++)	\
		if ((ri)->ri_magic == RUMPFS_IMAGE_MAGIC &&		\
		    (ri)->ri_reclen == sizeof(struct rumpfs_image))

#endif /* RUMPFS_IMAGES_H */
