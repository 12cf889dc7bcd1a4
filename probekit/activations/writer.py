"""Writing one site's activation store during extraction: where it goes (:class:`StorePlan`), its manifest, the
verified shards already done (resume), damaged shards and manifests rebuilt, each new shard committed atomically.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from probekit._io import atomic_write_bytes
from probekit.activations.store import STORE_FORMAT, read_json, verify_shard, write_shard
from probekit.errors import StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StorePlan:
    """Where one site's store of one split goes and what it holds: its folder, key, spec and layers."""

    site: str
    path: Path
    key: str
    spec: dict
    layers: list[int]
    width: int

    @property
    def complete(self) -> bool:
        """Whether a finished store is there already (extraction would reuse it)."""
        m = read_json(self.path / "manifest.json")
        return bool(m and m.get("key") == self.key and m.get("complete"))



class StoreWriter:
    """One site's store while :func:`extract_sites` writes it: its manifest, the shards already done (verified), and
    the commit of each new shard."""

    def __init__(self, plan: StorePlan, model, ex, sentences, plans, shard_words: int, strict: bool):
        # ex: the activations.extract.Extractor that computes the shards (its poolings go into the manifest)
        self.plan, self.plans, self.strict = plan, plans, strict
        self.store_dir = plan.path
        self.manifest_path = self.store_dir / "manifest.json"
        self.shard_words = shard_words
        words_per = [len(s) for s in sentences]
        self.manifest = {"format": STORE_FORMAT, "key": plan.key, **plan.spec, "word_pooling": ex.word_pooling,
                         "sentence_poolings": ex.sentence_poolings, "n_layers": model.num_layers + 1,
                         "hidden_size": plan.width, "n_sentences": len(sentences), "n_words": sum(words_per),
                         "n_shards": len(plans), "shard_words": shard_words, "shards": [], "complete": False}
        if plan.site != "resid_post":
            self.manifest["site"] = plan.site
        if plan.layers != list(range(model.num_layers + 1)):
            self.manifest["layers"] = plan.layers
        self.expected = {"words.npy", *(f"sent-{k}.npy" for k in ex.sentence_poolings)}
        self.done: dict[int, dict] = {}
        self.computed = 0

    def _damaged(self, problem: str, what: str) -> None:
        if self.strict:
            raise StoreError(f"Activation store damaged: {problem}. Delete {self.store_dir} or rerun without "
                             f"--strict to {what}.")

    def resume(self) -> None:
        """Read what a previous run left: the shards it committed (each verified), leftovers removed."""
        store_dir, key, plans, done = self.store_dir, self.plan.key, self.plans, self.done
        if self.manifest_path.is_file():
            old = read_json(self.manifest_path)  # None when unreadable, not UTF-8, not JSON or not an object
            if old is None:
                if self.strict:
                    raise StoreError(f"Activation store damaged: {self.manifest_path} is not a JSON object. Delete "
                                     f"{store_dir} or rerun without --strict to rebuild the manifest.")
                log.warning("Activation store damaged: %s is not a JSON object; rebuilding the manifest from the "
                            "shard folders (each shard is verified against its meta.json).", self.manifest_path)
            elif old.get("key") != key:
                problem = (f"{self.manifest_path} belongs to another store (key {old.get('key')}, expected {key}; "
                           "foreign manifest)")
                self._damaged(problem, "rebuild it")
                log.warning("Activation store damaged: %s; rebuilding the manifest from the shard folders (each shard "
                            "is verified against its meta.json).", problem)
            elif old.get("shard_words", self.shard_words) != self.shard_words:
                # same vectors, cut into other shards: not damage, but none of the old shards can be reused
                log.info("%s was written with shard_words=%s, now %s: extracting it again in the new shards",
                         store_dir, old.get("shard_words"), self.shard_words)
                for d_old in store_dir.glob("shard-*"):
                    shutil_rmtree(d_old)
            elif old.get("n_shards") == len(plans):
                for rec in old.get("shards") or []:
                    try:
                        done[int(rec["name"].split("-")[1])] = rec
                    except (TypeError, KeyError, IndexError, ValueError, AttributeError):
                        continue  # a malformed record: the shard folder's own meta.json is read below
                self.manifest["stats"] = old.get("stats", {})
        # pick up shards committed after the last manifest write (killed between rename and manifest)
        for p in plans:
            meta_file = store_dir / f"shard-{p.index:05d}" / "meta.json"
            if p.index in done or not meta_file.parent.is_dir():
                continue
            meta = read_json(meta_file)
            if meta is not None:
                done[p.index] = meta
                continue
            problem = f"{meta_file} is {'not a JSON object' if meta_file.is_file() else 'missing'}"
            self._damaged(problem, "recompute the shard")
            log.warning("Activation store damaged: %s. Recomputing that shard.", problem)
        for idx in sorted(done):
            meta = done[idx]
            p = plans[idx] if idx < len(plans) else None
            problem = verify_shard(store_dir, meta, expected=self.expected, key=key)
            if not problem and (p is None or [meta.get(k) for k in ("sent_start", "sent_end", "word_start", "word_end")]
                                != [p.sent_start, p.sent_end, p.word_start, p.word_end]):
                problem = f"{store_dir / meta['name']} covers other sentences than planned (foreign shard)"
            if problem:
                self._damaged(problem, "recompute the shard")
                log.warning("Activation store damaged: %s. Recomputing that shard.", problem)
                del done[idx]
        # leftovers of a killed run: a half-written shard folder, a half-written manifest
        for tmp in store_dir.glob(".tmp-shard-*"):
            shutil_rmtree(tmp)
        for tmp in store_dir.glob(".manifest.json.*.tmp"):
            tmp.unlink(missing_ok=True)
        for d_old in store_dir.glob("shard-*"):  # beyond the plan (from another shard size): never read, not kept
            if d_old.name[6:].isdigit() and int(d_old.name[6:]) >= len(plans):
                shutil_rmtree(d_old)

    def commit(self, p, arrays: dict, stats: dict) -> None:
        """Write shard ``p`` and the manifest that lists it."""
        meta = write_shard(self.store_dir, p.index, arrays, {"sent_start": p.sent_start, "sent_end": p.sent_end,
                                                             "word_start": p.word_start, "word_end": p.word_end},
                           key=self.plan.key)
        self.done[p.index] = meta
        self.computed += 1
        self.manifest["shards"] = [self.done[k] for k in sorted(self.done)]
        self.manifest["stats"] = {k: self.manifest.get("stats", {}).get(k, 0) + v for k, v in stats.items()}
        atomic_write_bytes(self.manifest_path, json.dumps(self.manifest, indent=1).encode())

    def finish(self) -> None:
        self.manifest["shards"] = [self.done[k] for k in sorted(self.done)]
        self.manifest["complete"] = len(self.done) == len(self.plans)
        atomic_write_bytes(self.manifest_path, json.dumps(self.manifest, indent=1).encode())


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
