# Generated from rumpfs/elf/registry.py by `python -m rumpfs.formats.precompile`.
# Do not edit: change the layout and run the command again.  The layout
# ignores this file unless SOURCE_CRC32 matches its source, and then
# derives the same values from its construct declarations (slower).

SOURCE = 'rumpfs/elf/registry.py'
SOURCE_CRC32 = 0x30ad4457
RECORDS = {32: ('L H H L L Q L L 32s 64s',
                (('ri_magic', None, None, 0),
                 ('ri_version', None, None, 0),
                 ('ri_format', None, None, 0),
                 ('ri_flags', None, None, 0),
                 ('ri_reclen', None, None, 0),
                 ('ri_size', None, None, 0),
                 ('ri_image', None, None, 0),
                 ('ri_image_pad', None, None, 0),
                 ('ri_name', None, None, b''),
                 ('ri_mountpoint', None, None, b'')),
                128),
           64: ('L H H L L Q Q 32s 64s',
                (('ri_magic', None, None, 0),
                 ('ri_version', None, None, 0),
                 ('ri_format', None, None, 0),
                 ('ri_flags', None, None, 0),
                 ('ri_reclen', None, None, 0),
                 ('ri_size', None, None, 0),
                 ('ri_image', None, None, 0),
                 ('ri_name', None, None, b''),
                 ('ri_mountpoint', None, None, b'')),
                128)}
STRINGS = {'ri_name': ('utf8', 32)}
