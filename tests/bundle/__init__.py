"""The bundle tests' Multiboot test kernel (C and assembly) and its qemu runner."""
