"""The library's error types. The CLIs map them to exit codes (jaxae.cli)."""


class ConfigError(ValueError):
    """Bad input: a setting, a file or a flag. Its message is one line naming the value and what is allowed."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); the last checkpoint is intact."""


class WriteError(RuntimeError):
    """A file or checkpoint could not be written (full disk, quota, read-only or vanished file
    system). Its message is one line naming the path and the operating system's reason; what
    was written before (the last good checkpoint included) is intact."""
