"""UD treebank names: ``ud:de_gsd`` or the repository folder ``UD_German-GSD`` -> the treebank's repository and files.

Every UD treebank is a repository ``UniversalDependencies/<folder>`` whose files are named
``<code>-ud-<split>.conllu``, where ``<code>`` is the language code and the treebank's name in lower case
(``UD_German-GSD`` -> ``de_gsd-ud-train.conllu``). The table below lists the treebanks probekit knows by name: each
entry is a treebank whose three files sit in its repository as ``<code>-ud-{train,dev,test}.conllu`` with their text
(the code-to-folder pairs of Stanza's generated table ``stanza/models/common/short_name_to_treebank.py``; for the two
Chinese treebanks the code is UD's file prefix ``zh_``, where Stanza writes ``zh-hant_``/``zh-hans_``). Left out on purpose: treebanks whose
train file is split into several files (``cs_pdt``, ``de_hdt``, ``ru_syntagrus``) and treebanks whose word forms are
withheld from the repository (``fr_ftb``, ``en_esl``, ``ar_nyuad``, ``ja_bccwj``): neither can be read as three files.
A treebank that is not here can be cloned by hand and read with ``dataset: conllu``.
"""
from __future__ import annotations

import difflib

from probekit.errors import ProbekitError

#: The UD release the named treebanks are downloaded from (the repositories' release tag).
UD_RELEASE = "r2.16"

#: code (the files' prefix) -> repository folder
UD_TREEBANKS: dict[str, str] = {
    "af_afribooms": "UD_Afrikaans-AfriBooms",
    "ar_padt": "UD_Arabic-PADT",
    "bg_btb": "UD_Bulgarian-BTB",
    "ca_ancora": "UD_Catalan-AnCora",
    "da_ddt": "UD_Danish-DDT",
    "de_gsd": "UD_German-GSD",
    "el_gdt": "UD_Greek-GDT",
    "en_ewt": "UD_English-EWT",
    "en_gum": "UD_English-GUM",
    "en_lines": "UD_English-LinES",
    "en_partut": "UD_English-ParTUT",
    "en_pud": "UD_English-PUD",
    "es_ancora": "UD_Spanish-AnCora",
    "es_gsd": "UD_Spanish-GSD",
    "et_edt": "UD_Estonian-EDT",
    "eu_bdt": "UD_Basque-BDT",
    "fa_seraji": "UD_Persian-Seraji",
    "fi_tdt": "UD_Finnish-TDT",
    "fr_gsd": "UD_French-GSD",
    "fr_sequoia": "UD_French-Sequoia",
    "ga_idt": "UD_Irish-IDT",
    "gl_ctg": "UD_Galician-CTG",
    "he_htb": "UD_Hebrew-HTB",
    "hi_hdtb": "UD_Hindi-HDTB",
    "hr_set": "UD_Croatian-SET",
    "hu_szeged": "UD_Hungarian-Szeged",
    "id_gsd": "UD_Indonesian-GSD",
    "it_isdt": "UD_Italian-ISDT",
    "ja_gsd": "UD_Japanese-GSD",
    "ko_gsd": "UD_Korean-GSD",
    "ko_kaist": "UD_Korean-Kaist",
    "lt_alksnis": "UD_Lithuanian-ALKSNIS",
    "lv_lvtb": "UD_Latvian-LVTB",
    "nl_alpino": "UD_Dutch-Alpino",
    "nl_lassysmall": "UD_Dutch-LassySmall",
    "pl_lfg": "UD_Polish-LFG",
    "pl_pdb": "UD_Polish-PDB",
    "pt_bosque": "UD_Portuguese-Bosque",
    "pt_gsd": "UD_Portuguese-GSD",
    "ro_rrt": "UD_Romanian-RRT",
    "ru_gsd": "UD_Russian-GSD",
    "sk_snk": "UD_Slovak-SNK",
    "sl_ssj": "UD_Slovenian-SSJ",
    "sr_set": "UD_Serbian-SET",
    "sv_lines": "UD_Swedish-LinES",
    "sv_talbanken": "UD_Swedish-Talbanken",
    "tr_boun": "UD_Turkish-BOUN",
    "tr_imst": "UD_Turkish-IMST",
    "uk_iu": "UD_Ukrainian-IU",
    "ur_udtb": "UD_Urdu-UDTB",
    "vi_vtb": "UD_Vietnamese-VTB",
    "zh_gsd": "UD_Chinese-GSD",
    "zh_gsdsimp": "UD_Chinese-GSDSimp",
}

_BY_FOLDER = {folder.lower(): code for code, folder in UD_TREEBANKS.items()}
PREFIX = "ud:"


def is_ud_name(name: str) -> bool:
    """Whether ``name`` is meant as a UD treebank by name (``ud:...`` or a ``UD_...`` folder), known or not."""
    return isinstance(name, str) and (name.startswith(PREFIX) or name.startswith("UD_"))


def resolve(name: str, error: type[ProbekitError]) -> tuple[str, str]:
    """``(code, folder)`` of ``ud:CODE``, ``ud:FOLDER`` or ``FOLDER`` (folder names in any case), else ``error`` in one
    line with the close matches (a bare language code lists that language's treebanks)."""
    key = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if key in UD_TREEBANKS:
        return key, UD_TREEBANKS[key]
    if key.lower() in _BY_FOLDER:
        code = _BY_FOLDER[key.lower()]
        return code, UD_TREEBANKS[code]
    same_language = [c for c in UD_TREEBANKS if c.split("_")[0] == key.lower()]
    if same_language:
        raise error(f"Dataset {name!r} names a language, not a treebank; its treebanks here: "
                    f"{', '.join(PREFIX + c for c in same_language)}.")
    close = difflib.get_close_matches(key.lower(), [*UD_TREEBANKS, *_BY_FOLDER], n=4, cutoff=0.6)
    shown = sorted({PREFIX + (c if c in UD_TREEBANKS else _BY_FOLDER[c]) for c in close})
    hint = f" Close matches: {', '.join(shown)}." if shown else ""
    raise error(f"Unknown UD treebank {name!r}.{hint} probekit knows {len(UD_TREEBANKS)} treebanks by name "
                "(probekit.data.ud_names.UD_TREEBANKS); for another one, clone its repository and use dataset: conllu "
                "with files: {train: PATH, dev: PATH, test: PATH}.")
