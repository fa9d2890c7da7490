# Generated from rumpfs/tar_layout.py by `python -m rumpfs.formats.precompile`.
# Do not edit: change the layout and run the command again.  The layout
# ignores this file unless SOURCE_CRC32 matches its source, and then
# derives the same values from its construct declarations (slower).

SOURCE = 'rumpfs/tar_layout.py'
SOURCE_CRC32 = 0xa1aeb943
FORMAT = '100s 8s 8s 8s 12s 12s 8s 1s 100s 6s 2s 32s 32s 8s 8s 155s 12x'
FIELDS = ('name',
          'mode',
          'uid',
          'gid',
          'size',
          'mtime',
          'chksum',
          'typeflag',
          'linkname',
          'magic',
          'version',
          'uname',
          'gname',
          'devmajor',
          'devminor',
          'prefix')
SIZE = 512
