"""What crosses the boundaries: the subscriber protocol, the configuration, the venue registry.

Pure, like the core: messages are msgspec Structs, decoded and encoded here, sent elsewhere.
"""
