# Generated from rumpfs/formats/cpio/layout.py by `python -m rumpfs.formats.precompile`.
# Do not edit: change the layout and run the command again.  The layout
# ignores this file unless SOURCE_CRC32 matches its source, and then
# derives the same values from its construct declarations (slower).

SOURCE = 'rumpfs/formats/cpio/layout.py'
SOURCE_CRC32 = 0x73212a7d
FIELDS = ('c_ino',
          'c_mode',
          'c_uid',
          'c_gid',
          'c_nlink',
          'c_mtime',
          'c_filesize',
          'c_devmajor',
          'c_devminor',
          'c_rdevmajor',
          'c_rdevminor',
          'c_namesize',
          'c_check')
FIELD_WIDTH = 8
MAGIC_SIZE = 6
HEADER_SIZE = 110
