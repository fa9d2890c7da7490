# Generated from rumpfs/etc/db185.py by `python -m rumpfs.formats.precompile`.
# Do not edit: change the layout and run the command again.  The layout
# ignores this file unless SOURCE_CRC32 matches its source, and then
# derives the same values from its construct declarations (slower).

SOURCE = 'rumpfs/etc/db185.py'
SOURCE_CRC32 = 0x09314609
HASHHDR = ('l l L l l l l l l l l l l l l l L 32l 32H',
           (('magic', None, None, 0),
            ('version', None, None, 0),
            ('lorder', None, None, 0),
            ('bsize', None, None, 0),
            ('bshift', None, None, 0),
            ('dsize', None, None, 0),
            ('ssize', None, None, 0),
            ('sshift', None, None, 0),
            ('ovfl_point', None, None, 0),
            ('last_freed', None, None, 0),
            ('max_bucket', None, None, 0),
            ('high_mask', None, None, 0),
            ('low_mask', None, None, 0),
            ('ffactor', None, None, 0),
            ('nkeys', None, None, 0),
            ('hdrpages', None, None, 0),
            ('h_charkey', None, None, 0),
            ('spares', 32, None, 0),
            ('bitmaps', 32, None, 0)),
           260)
HASHHDR_BYTEORDER = 'big'
PAGE_TABLE = (('n', 'H', None), ('entries', 'H', 'n'), ('free', 'H', None), ('offset', 'H', None))
BITMAP_WORD = 'L'
