"""Reports on finished runs: a comparison table, training curves and t-SNE maps (`compmod report`).

Needs the `report` extra (matplotlib; scikit-learn for the t-SNE).
"""

try:
    import matplotlib  # noqa: F401
except ImportError:  # pragma: no cover - the extra is installed wherever the tests run
    from compmod.errors import ConfigError

    raise ConfigError(
        "compmod report needs matplotlib; install it with pip install 'compmod[report]'"
    ) from None

from compmod.report.runs import Run, load_run
from compmod.report.write import write_report

__all__ = ["Run", "load_run", "write_report"]
