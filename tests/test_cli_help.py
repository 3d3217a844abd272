"""`--help` of every command: each option states its default (a pass option's default is read from the pass,
so it cannot drift), and each command opens with a one-line summary that `qdqc --help` shows whole."""

from __future__ import annotations

import click
import pytest

from qdq_compiler.cli import cli, main
from qdq_compiler.pm import get_pass
from qdq_compiler.pm.options import format_value

# Optional options whose absence means "not used / not written": they have no default to state.
OFF_WHEN_ABSENT = {
    "--calib",
    "--calib-cache",
    "--summary-json",
    "--ir-dump-dir",
    "--reproducer-dir",
    "--timing-cache",
    "--model",
    "--profile",
    "--dla",
}
# Options that leave a pass option alone when absent: their help shows that pass option's default.
PASS_BACKED = {"--method": ("calibrate", "method"), "--missing-scales": ("import-scales", "missing")}


UNSET = getattr(click.core, "UNSET", None)  # click 8.2+: the default of an option declared without one


def _commands():
    return [pytest.param(name, command, id=name) for name, command in sorted(cli.commands.items())] + [
        pytest.param("qdqc", cli, id="qdqc")
    ]


def _help_records(command: click.Command) -> list[tuple[click.Option, str]]:
    ctx = click.Context(command, info_name="qdqc")
    records = []
    for param in command.get_params(ctx):
        if isinstance(param, click.Option) and not param.hidden:
            record = param.get_help_record(ctx)
            records.append((param, record[1] if record else ""))
    return records


@pytest.mark.parametrize("name, command", _commands())
def test_every_option_states_its_default(name, command) -> None:
    """A value default is shown with its value; an option without one says what its absence means, unless
    absence just means "not used"."""
    missing = []
    for option, text in _help_records(command):
        if option.is_flag or option.count or option.multiple or option.required:
            continue
        default = None if option.default is UNSET else option.default
        if default is not None and default is not False:
            shown = format_value(default) if not isinstance(default, str) else default
            if "default: " not in text or shown not in text:
                missing.append(f"{option.opts[-1]} (default {default!r})")
        elif option.opts[-1] not in OFF_WHEN_ABSENT and "default" not in text.lower():
            missing.append(option.opts[-1])
    assert not missing, f"qdqc {name}: options whose help does not state the default: {missing}"


@pytest.mark.parametrize("flag, pass_option", sorted(PASS_BACKED.items()))
def test_a_pass_backed_option_shows_the_pass_default(flag, pass_option) -> None:
    pass_name, field = pass_option
    expected = f"[default: {format_value(getattr(get_pass(pass_name).Options(), field))}]"
    seen = 0
    for name, command in cli.commands.items():
        for option, text in _help_records(command):
            if flag in option.opts:
                seen += 1
                assert option.default in (None, UNSET), f"{name} {flag}: a copy of the pass's default"
                assert expected in text, (name, text)
    assert seen >= 1


def test_method_default_is_calibrate_s_in_every_command() -> None:
    """compile, sensitivity and demo all show `[default: percentile]` for --method: calibrate's own (calibrate
    the command does not offer --method: the statistics it saves do not depend on it)."""
    assert get_pass("calibrate").Options().method == "percentile"
    for name in ("compile", "sensitivity", "demo"):
        texts = [text for option, text in _help_records(cli.commands[name]) if "--method" in option.opts]
        assert len(texts) == 1 and texts[0].endswith("[default: percentile]"), (name, texts)


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_opens_with_a_one_line_summary(name, capsys) -> None:
    command = cli.commands[name]
    first = command.help.strip().splitlines()[0]
    assert first.endswith(".") and len(first) <= 59, first  # 59: what `qdqc --help` shows untruncated
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out.split("Commands:", 1)[1]
    line = next(line for line in listing.splitlines() if line.split()[:1] == [name])
    assert line.split(None, 1)[1] == first, line


def test_pass_default_option_joins_click_s_other_extras() -> None:
    from qdq_compiler.cli_help import PassDefaultOption

    @click.command()
    @click.option(
        "--bins",
        type=click.IntRange(min=1),
        default=None,
        cls=PassDefaultOption,
        pass_option=("calibrate", "num_bins"),
        help="Histogram bins.",
    )
    def command(bins: int | None) -> None:
        """A command."""

    [(_, text)] = [(o, t) for o, t in _help_records(command) if "--bins" in o.opts]
    assert text == f"Histogram bins.  [default: {get_pass('calibrate').Options().num_bins}; x>=1]"
