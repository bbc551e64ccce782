"""The one error type a user of the preprocessing job is meant to see."""


class PreprocessError(Exception):
    """A problem the user can fix; the message names the input and the fix.

    `pipeline.main` prints it as one line and exits non-zero, without a traceback.
    """
