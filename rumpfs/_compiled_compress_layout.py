# Generated from rumpfs/compress_layout.py by `python -m rumpfs.formats.precompile`.
# Do not edit: change the layout and run the command again.  The layout
# ignores this file unless SOURCE_CRC32 matches its source, and then
# derives the same values from its construct declarations (slower).

SOURCE = 'rumpfs/compress_layout.py'
SOURCE_CRC32 = 0x74f8174b
FORMATS = {'GZIP_HEADER': ('<2sBBLBB',
                           (('id', b'\x1f\x8b'),
                            ('cm', 8),
                            ('flg', 0),
                            ('mtime', None),
                            ('xfl', None),
                            ('os', None))),
           'GZIP_TRAILER': ('<LL', (('crc32', None), ('isize', None))),
           'LZ4_LEGACY_HEADER': ('<L', (('magic', 407642370),)),
           'LZ4_LEGACY_BLOCK': ('<L', (('compressed_size', None),))}
