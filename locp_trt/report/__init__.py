"""Reporting: report.json (`files`), its content from a finished run (`content`), and the
figures (`plots`). Importing this package loads neither torch nor matplotlib."""

from .files import REPORT_SCHEMA as REPORT_SCHEMA
from .files import load_report as load_report
from .files import status_words as status_words
from .files import summary_table as summary_table
from .files import write_report as write_report
from .plots import STAIRS_TITLE as STAIRS_TITLE
from .plots import STAIRS_YLABEL as STAIRS_YLABEL
from .plots import HistoryPlot as HistoryPlot
from .plots import StairsPanel as StairsPanel
from .plots import history_plot as history_plot
from .plots import plot_group_stairs as plot_group_stairs
from .plots import plot_history as plot_history
from .plots import plot_staircase as plot_staircase
from .plots import stairs_panels as stairs_panels
from .plots import write_plots as write_plots

__all__ = ["REPORT_SCHEMA", "load_report", "status_words", "summary_table", "write_report", "STAIRS_TITLE",
           "STAIRS_YLABEL", "HistoryPlot", "StairsPanel", "history_plot", "plot_group_stairs", "plot_history",
           "plot_staircase", "stairs_panels", "write_plots"]
