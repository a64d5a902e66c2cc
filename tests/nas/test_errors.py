"""Library errors name the setting at fault; the commands turn it into the flag."""

from __future__ import annotations

import pytest

from nas.cli import flag_of, message_of, run
from nas.errors import UserError
from nas.evolve import main as evolve_main
from nas.search.config import resolve


def test_a_library_error_names_the_setting_and_a_command_names_the_flag():
    err = UserError("must be >= 1", setting="min_distance")
    assert str(err) == "min_distance: must be >= 1"  # from Python: the setting's key
    assert message_of(err) == "--min-distance: must be >= 1"  # from a command: its flag
    assert message_of(UserError("no setting at fault")) == "no setting at fault"
    assert flag_of("defense_args") == "--defense-arg" and flag_of("lam") == "--lambda"


def test_config_errors_carry_their_setting():
    with pytest.raises(UserError) as err:
        resolve({"strategy": "bayes"}, preset="smoke", config_file=None, run_dir="")
    assert err.value.setting == "strategy" and "--" not in str(err.value)
    with pytest.raises(UserError) as err:
        resolve({"population": "three"}, preset="smoke", config_file=None, run_dir="")
    assert err.value.setting == "population" and "--" not in str(err.value)


@pytest.mark.parametrize(("argv", "line"), [
    (["--min-distance", "1000"], "--min-distance: could not sample"),
    (["--strategy", "bayes"], "--strategy: must be one of"),
    (["--fitness-split", "train"], "--fitness-split: must be val or test"),
])
def test_a_command_prints_the_flag_of_the_setting_a_library_error_names(argv, line, tmp_path,
                                                                          capsys):
    code = run(evolve_main, ["--preset", "smoke", "--run-dir", str(tmp_path), "--cache-dir",
                             str(tmp_path / "cache"), "--no-progress", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and line in err[0], err
    assert not any(p.name != "cache" for p in tmp_path.iterdir())
