"""Error classes for mistakes in the user's input: a config value, a file, a checkpoint, an environment variable.

Every such error derives from :class:`UserError` as a mixin next to the built-in base it always had, so that code
catching ``ValueError``, ``KeyError`` or ``FileNotFoundError`` keeps working, while the command line can tell an
error it should report as one message from a bug that needs its traceback.
"""


class UserError(Exception):
    """An error about the user's input that the command line reports as one message, without a traceback."""


class ConfigValueError(UserError, ValueError):
    """A value the user gave (a config entry, a command-line option, an environment variable) is invalid."""


class ConfigKeyError(UserError, KeyError):
    """A key that the user's config or environment must have is missing, or names nothing supported.

    ``str()`` is the message itself, not the quoted repr that a plain ``KeyError`` shows.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class InputFileNotFoundError(UserError, FileNotFoundError):
    """A file the user named (a config, a checkpoint, an annotation file, an image) does not exist."""


class MissingExtraError(UserError, ImportError):
    """An optional package that a command needs is not installed; the message names what installs it."""
