"""Sphinx configuration of mlcl's documentation site (build: see docs/building.md).

Sphinx rather than MkDocs because the docstrings are written for it: Google-style sections (napoleon) holding
reST cross-references (``:func:``, ``:class:``, ``:mod:``, several hundred of them) and LaTeX equations
(``.. math::``, ``:math:``). Sphinx renders them as written and checks every reference (``nitpicky``), where
mkdocstrings would print the roles literally. The pages are Markdown (MyST).
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent / "src"))  # the checkout under build, whatever else is installed

import mlcl  # noqa: E402

project = "mlcl"
author = "the mlcl authors"
copyright = "the mlcl authors"  # noqa: A001
release = mlcl.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "mathml",  # docs/_ext/mathml.py: equations as MathML, rendered by the browser, nothing fetched
    "apipages",  # docs/_ext/apipages.py: docs/api/*.rst from the package's __all__s
    "navpages",  # docs/_ext/navpages.py: a page of docs/ missing from the navigation is added to it
]

# pages that guides.md lists and that are being written: each is left out of the navigation until it exists;
# a page of docs/ that no toctree lists is appended to the guides (docs/_ext/navpages.py)
navpages_optional = ["speed", "frozen", "labels"]
navpages_into = "guides"

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# --- strictness: every reference must resolve (the build runs with -W: a warning fails it) ---
nitpicky = True
# Third-party names in signatures and docstrings: their sites' inventories are not fetched (the build is offline).
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(torch|numpy|np|nn|PIL|timm|sklearn|matplotlib|onnx|onnxruntime|yaml|argparse|collections|typing"
        r"|typing_extensions|torchvision|pathlib|os|io|datetime|concurrent|multiprocessing|threading|dataclasses|enum|types"
        r"|contextlib|json|csv|logging|signal|abc|numbers|random|functools|subprocess|re|tqdm)(\..*)?",
    ),
    (
        r"py:.*",
        r"(Tensor|Path|PathLike|Any|Callable|Iterable|Iterator|Sequence|Mapping|MutableMapping|Literal"
        r"|Optional|Union|TypeAlias|NamedTuple|Generator|ndarray|NDArray|Module|Parameter|Optimizer|LRScheduler"
        r"|Dataset|DataLoader|Sampler|Image|Figure|Axes|Self|TextIO|BinaryIO|IO|ModuleType|Namespace"
        r"|ArgumentParser|Enum|Protocol|TypeVar|ClassVar|Final|Generic|dtype|device|Size|Function|FunctionCtx"
        r"|ProcessGroup|Work|InferenceSession|Event|Thread|Lock|Popen|ScriptModule|GradScaler|autocast"
        r"|T|T_co|np\.ndarray|NDArray\[.*\])",
    ),
    (
        r"py:class",
        r"(int|float|str|bool|bytes|list|dict|tuple|set|frozenset|object|type|None|slice|range"
        r"|BaseException|Exception|ValueError|TypeError|RuntimeError|OSError|KeyError|SystemExit|"
        r"FileNotFoundError|KeyboardInterrupt|NotImplementedError|LookupError|IndexError|AttributeError)",
    ),
]

# --- MyST (the Markdown pages) ---
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 4  # `page.md#a-heading` links, checked by the build
myst_dmath_double_inline = True

# --- autodoc / napoleon (the API pages) ---
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = False
autodoc_class_signature = "mixed"
autodoc_default_options: dict[str, object] = {}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
python_use_unqualified_type_names = True
add_module_names = False
toc_object_entries_show_parents = "hide"

# --- HTML ---
html_theme = "pydata_sphinx_theme"
html_title = "mlcl"
html_static_path = ["_static"]
html_css_files = ["mlcl.css"]
html_show_sourcelink = False
html_copy_source = False
html_last_updated_fmt = None
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "header_links_before_dropdown": 5,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"**": ["sidebar-nav-bs"], "index": [], "quickstart": []}
html_context = {"default_mode": "light"}  # (an empty stored mode makes the theme log a console error)
html_favicon = "_static/favicon.svg"
