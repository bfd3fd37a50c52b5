"""Everything ``workbench compare`` reports, from one pass over the store.

``compare(ds, selection, by="domain")`` reads each selected chunk once and derives every metric of the
report from the same counts (loads, gate weights, agreement pairs, transitions, per-sequence loads), so a
K2-scale store is decompressed once, not once per metric. The numbers are the same as the individual
metric functions' (they share the dataset builders).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from workbench.analysis.divergence import divergence_dataset, resampling_units
from workbench.analysis.engine import Want, accumulate
from workbench.analysis.inputs import MetricInputError, has_gate_weights, prepare
from workbench.analysis.load import entropy_dataset, load_dataset
from workbench.analysis.pairs import agreement_baselines, agreement_dataset, transitions_dataset
from workbench.analysis.specialization import specialization_dataset, specificity_table
from workbench.store import schema as S
from workbench.store.select import Selection


@dataclass
class Comparison:
    """The report's numbers. Dataset dims use the grouping's name (``domain``, ``segment``, ...)."""

    by: str
    groups: list[str]
    load: xr.Dataset  # count/share/relative_load (by, layer, expert), n_tokens (by,)
    entropy: xr.Dataset  # load entropy (by, layer)
    gate_entropy: xr.Dataset | None  # gate-weight entropy (by, layer); None for ids-only stores
    specialization: xr.Dataset  # DS(E, D) (by, layer, expert)
    agreement: xr.Dataset  # first_choice/any_topk (by, layer)
    transitions: xr.Dataset | None  # layer_top_mass (layer,); None with fewer than two layers
    divergence: xr.Dataset | None  # jsd + CI + p (pair, layer); None with a single group
    specific: pd.DataFrame  # most group-specific experts per layer
    n_sequences: dict[str, int]
    store: dict[str, Any] = field(default_factory=dict)

    def per_layer(self) -> pd.DataFrame:
        """One row per (group, layer): tokens, entropies, max relative load, agreement and baselines."""
        rows = []
        base = agreement_baselines(int(self.load.attrs["n_experts"]), int(self.load.attrs["top_k"]))
        for g in self.groups:
            for layer in self.load["layer"].values:
                sel = {self.by: g, "layer": layer}
                row = {
                    self.by: g,
                    "layer": int(layer),
                    "tokens": int(self.load["n_tokens"].sel({self.by: g})),
                    "load_entropy_bits": float(self.entropy["entropy"].sel(sel)),
                    "load_entropy_normalized": float(self.entropy["normalized"].sel(sel)),
                    "max_relative_load": float(self.load["relative_load"].sel(sel).max()),
                    "experts_used": int((self.load["count"].sel(sel) > 0).sum()),
                    "agreement_first_choice": float(self.agreement["first_choice"].sel(sel)),
                    "agreement_any_topk": float(self.agreement["any_topk"].sel(sel)),
                    "agreement_pairs": int(self.agreement["n_pairs"].sel(sel)),
                    "baseline_first_choice": base["first_choice"],
                    "baseline_any_topk": base["any_topk"],
                }
                if self.gate_entropy is not None:
                    row["gate_entropy_bits"] = float(self.gate_entropy["entropy"].sel(sel))
                rows.append(row)
        return pd.DataFrame(rows)

    def expert_table(self) -> pd.DataFrame:
        """Long table (group, layer, expert): count, share, relative_load, specialization."""
        df = self.load[["count", "share", "relative_load"]].to_dataframe()
        df["specialization"] = self.specialization["specialization"].to_series()
        return df.reset_index()

    def divergence_table(self) -> pd.DataFrame:
        if self.divergence is None:
            return pd.DataFrame()
        keys = ["jsd", "ci_low", "ci_high", "boot_mean", "null_mean", "p_value"]
        df = self.divergence[keys].to_dataframe().reset_index()
        return df.drop(columns=[c for c in ("a", "b") if c in df.columns])

    def transitions_table(self) -> pd.DataFrame:
        if self.transitions is None:
            return pd.DataFrame()
        t = self.transitions
        return pd.DataFrame(
            {
                "layer": t["layer"].values,
                "next_layer": t["next_layer"].values,
                "top_mass": t["layer_top_mass"].values,
                "uniform_top_mass": t.attrs["uniform_top_mass"],
            }
        )

    def summary(self) -> dict[str, Any]:
        """Small JSON-ready summary (the CSVs hold the full tables).

        On a store not in router rank order the first-choice agreement is ``None`` and ``notes`` says why.
        """
        ordered = "first_choice_note" not in self.agreement.attrs
        out: dict[str, Any] = {
            "by": self.by,
            "store": self.store,
            "groups": {
                g: {
                    "tokens": int(self.load["n_tokens"].sel({self.by: g})),
                    "sequences": self.n_sequences.get(g, 0),
                    "mean_load_entropy_normalized": float(self.entropy["normalized"].sel({self.by: g}).mean()),
                    "mean_agreement_first_choice": (
                        float(self.agreement["first_choice"].sel({self.by: g}).mean()) if ordered else None
                    ),
                    "mean_agreement_any_topk": float(self.agreement["any_topk"].sel({self.by: g}).mean()),
                }
                for g in self.groups
            },
            "baselines": {
                "agreement": agreement_baselines(int(self.load.attrs["n_experts"]), int(self.load.attrs["top_k"])),
                "specialization_uniform": float(self.specialization.attrs["uniform"]),
            },
            "definitions": "docs/metrics.md",
        }
        if not ordered:
            out["notes"] = [str(self.agreement.attrs["first_choice_note"])]
        if self.transitions is not None:
            out["transitions_mean_top_mass"] = float(self.transitions["layer_top_mass"].mean())
            out["transitions_uniform_top_mass"] = float(self.transitions.attrs["uniform_top_mass"])
        if self.divergence is not None:
            d = self.divergence
            out["divergence"] = {
                str(p): {
                    "mean_jsd": float(d["jsd"].sel(pair=p).mean()),
                    "max_jsd_layer": int(d["layer"].values[int(np.argmax(d["jsd"].sel(pair=p).values))]),
                    "max_jsd": float(d["jsd"].sel(pair=p).max()),
                    "mean_null_jsd": float(d["null_mean"].sel(pair=p).mean()),
                    "p_value_overall": float(d["p_value_overall"].sel(pair=p)),
                }
                for p in d["pair"].values
            }
            out["divergence_settings"] = {k: d.attrs[k] for k in ("n_boot", "n_perm", "ci", "seed")}
        return out


def compare(
    ds: xr.Dataset,
    selection: Selection | None = None,
    *,
    by: str = "domain",
    n_boot: int = 1000,
    n_perm: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    top: int = 5,
    with_transitions: bool = True,
    progress: bool = False,
) -> Comparison:
    """Compute every number of the comparison report in one pass (see the module docstring)."""
    inputs = prepare(ds, selection, by=by)
    weights = has_gate_weights(ds)
    unit, unit_group = resampling_units(inputs)
    trans = with_transitions and len(inputs.layers) >= 2
    want = Want(load=True, weights=weights, transitions=trans, agreement=True, per_unit=True)
    part = accumulate(inputs, want, unit=unit, progress=progress)
    if part.agree is None or int(part.agree[..., 0].sum()) == 0:
        raise MetricInputError("the selection holds no pair of consecutive tokens of the same sequence")
    spec = specialization_dataset(inputs, part)
    specific = specificity_table(spec, top=top) if inputs.n_groups >= 2 else pd.DataFrame()
    per_group_units = np.bincount(unit_group, minlength=inputs.n_groups)
    weighted = weights and part.nan_weights == 0 and part.entropy is not None
    return Comparison(
        by=by,
        groups=list(inputs.groups),
        load=load_dataset(inputs, part),
        entropy=entropy_dataset(inputs, part, "load"),
        gate_entropy=entropy_dataset(inputs, part, "gate") if weighted else None,
        specialization=spec,
        agreement=agreement_dataset(inputs, part),
        transitions=transitions_dataset(inputs, part) if trans else None,
        divergence=(
            divergence_dataset(inputs, part, unit_group, n_boot=n_boot, n_perm=n_perm, ci=ci, seed=seed)
            if inputs.n_groups >= 2
            else None
        ),
        specific=specific,
        n_sequences={g: int(n) for g, n in zip(inputs.groups, per_group_units, strict=True)},
        store={
            "model": inputs.config.model_name,
            "layers": [int(x) for x in inputs.layers],
            "n_experts": inputs.n_experts,
            "top_k": inputs.top_k,
            "tokens_total": int(ds.sizes[S.TOKEN]),
            "tokens_selected": int((inputs.group >= 0).sum()),
            "has_gate_weights": weights,
        },
    )
