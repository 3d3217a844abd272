"""What `--help` shows beyond the options themselves: the exit codes, and defaults that live in a pass's
Options (read from the pass when help is printed, so the help text cannot drift from the code)."""

from __future__ import annotations

import click

from qdq_compiler.errors import EXIT_CODES


def exit_codes_epilog() -> str:
    """The exit-code table as a click epilog (`\\b` keeps click from re-wrapping its lines)."""
    rows = "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES)
    return f"\b\nExit codes:\n{rows}"


class PassDefaultOption(click.Option):
    """An option whose default (None: "leave the pass option alone") is the default of a pass option.

    `--help` shows that value as `[default: ...]`, read from the registered pass, e.g.
    ``click.option("--method", cls=PassDefaultOption, pass_option=("calibrate", "method"))``.
    """

    def __init__(self, *args, pass_option: tuple[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pass_option = pass_option

    def pass_default(self) -> str:
        """The pass option's default as pipeline text would spell it (e.g. `mse`)."""
        from qdq_compiler.pm import get_pass
        from qdq_compiler.pm.options import format_value

        pass_name, field = self.pass_option
        return format_value(getattr(get_pass(pass_name).Options(), field))

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None or "[default: " in record[1]:
            return record
        names, text = record
        default = f"default: {self.pass_default()}"
        if text.endswith("]") and "  [" in text:  # click's bracket of extras, e.g. "[x>=1]": default first
            head, extras = text.rsplit("  [", 1)
            return names, f"{head}  [{default}; {extras}"
        return names, f"{text}  [{default}]" if text else f"[{default}]"
