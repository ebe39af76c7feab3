"""Charts: Altair builders over the tidy roll-ups of `analytics.present.rollups`, in one house theme.

Each builder takes a small Polars frame (a roll-up, or `Comparison.table` / `Projection.table`) and
returns an Altair chart (`alt.Chart`, or a layer or concat of them); it never saves or shows it.
A notebook displays it, and `wa-analytics report` turns `chart.to_dict()` into an image with
vl-convert, so every chart renders offline: no data URL, no script from the internet.

**Small data.** Builders pre-aggregate to one row per mark (a bar segment, a cell, a point) with
Polars before handing the frame to Altair, so a chart carries a few hundred rows whatever the
traffic and Altair's `max_rows` limit is never reached, nor disabled. Aggregation in Vega-Lite is
left to what needs no data: stacking, sorting.

**One look.** Importing this module registers and enables the theme `wa-analytics` (Altair's
theme API, `alt.theme.register(..., enable=True)`). Colours are fixed per category
(`CATEGORY_COLOURS`: marketing, utility, authentication, authentication_international, service,
the group categories, Meta Business Agent and AI Providers, then the CBP-2022 and other categories), per reconciliation status and per pricing type, and
every chart with a colour for them sets the scale's domain and range from those tables: marketing
is the same colour in every chart, and stacks keep the same order (first at the bottom).
Categories no table knows get greys, in name order. Money axes say the currency: `Cost (USD)`.
Months are the `YYYY-MM` strings of the billing time zone (ordinal axes, every month of the span
shown, empty ones too).

**Two renderings.** A notebook enables `png` for the mailed report, or `VEGA_RENDERER` (registered
here) for the interactive one: each chart's Vega-Lite spec in the output, drawn by the page.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import altair as alt
import polars as pl

from analytics.core import schema
from analytics.core.money import rounded
from analytics.present import rollups
from analytics.reconcile import outcomes
from analytics.whatif import strategies
from analytics.whatif.explain import CURRENCY, EFFECTS, Explanation
from analytics.whatif.scenarios import BASELINE

THEME = "wa-analytics"
FONT = "Helvetica, Arial, sans-serif"
WIDTH = 560
HEIGHT = 280
PANEL_WIDTH = 300  # each panel of a side-by-side pair

# Fixed colours: a category looks the same in every chart (contracts.md §2 categories).
CATEGORY_COLOURS: dict[str, str] = {
    "marketing": "#4c78a8",
    "utility": "#f58518",
    "authentication": "#54a24b",
    "authentication_international": "#88d27a",
    "service": "#b279a2",
    # 2026: group deliveries in their base category's lighter shade, then Meta Business Agent and AI Providers
    "group_marketing": "#9ecae9",
    "group_utility": "#ffbf79",
    "group_service": "#d6a5c9",
    "meta_business_agent": "#17becf",
    "general_purpose_ai": "#bcbd22",
    "referral_conversion": "#eeca3b",
    "user_initiated": "#9d755d",
    "business_initiated": "#72b7b2",
    strategies.OTHER_CHANNEL_CATEGORY: "#ff9da6",
    # the lines of a strategy's own cost, outside Meta's bill (strategies.OWN_COST_CATEGORIES)
    strategies.OWN_AI_CATEGORY: "#e7ba52",
    strategies.AGENT_OWN_COST_CATEGORY: "#ce6dbd",
}
CATEGORY_ORDER = tuple(CATEGORY_COLOURS)
UNKNOWN_COLOURS = ("#7f7f7f", "#a5a5a5", "#c7c7c7", "#595959", "#d9d9d9")
STATUS_COLOURS: dict[str, str] = {
    outcomes.MATCH: "#54a24b",
    outcomes.DIFFERENT: "#f58518",
    outcomes.MISSING_OURS: "#e45756",
    outcomes.MISSING_META: "#b279a2",
}
PRICING_TYPE_COLOURS: dict[str, str] = dict(zip(schema.PRICING_TYPES, ("#4c78a8", "#9ecae9", "#eeca3b", "#b279a2", "#72b7b2"), strict=True))
SCENARIO_COLOURS = ("#333333", "#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#9d755d")  # baseline first
# The saving chart's own two colours, by sign, with its own legend: neither is a category's colour
# (a green saving read as "authentication" beside the category legend).
SAVING, NO_CHANGE, EXTRA_COST = "saves", "no change", "costs more"
SAVING_COLOUR, NO_CHANGE_COLOUR, EXTRA_COST_COLOUR = "#1f6f5c", "#888888", "#b2182b"
PROJECTION_COLUMNS = 3  # small multiples of the projection: panels per row
PROJECTION_PANEL_WIDTH, PROJECTION_PANEL_HEIGHT = 170, 120
SWITCH_COLOUR = "#333333"
MONTH_COST_COLOUR = "#4c78a8"  # a waterfall's first and last bar: what each month cost


# The renderer of the interactive report (`wa-analytics report --interactive`): each chart's
# Vega-Lite spec, data inlined, as a `+json` entry, which nbformat takes as JSON. Altair 6's own
# `mimetype` renderer writes `application/vnd.vegalite.v6.json`, which nbformat refuses.
VEGA_RENDERER = "wa-analytics-vega"
VEGA_LITE_MIMETYPE = "application/vnd.vegalite.v6+json"


def _vega_lite_bundle(spec: dict, **_: Any) -> dict[str, Any]:
    return {VEGA_LITE_MIMETYPE: spec, "text/plain": "<a chart: Vega-Lite spec>"}


alt.renderers.register(VEGA_RENDERER, _vega_lite_bundle)


@alt.theme.register(THEME, enable=True)
def house_theme() -> alt.theme.ThemeConfig:
    """The look of every chart of the package: plain, readable in a mail client at 600 px."""
    return {
        "config": {
            "font": FONT,
            "view": {"continuousWidth": WIDTH, "continuousHeight": HEIGHT, "stroke": None},
            "title": {"fontSize": 15, "anchor": "start", "subtitleColor": "#555555", "subtitleFontSize": 12},
            "axis": {"labelFontSize": 11, "titleFontSize": 12, "gridColor": "#e6e6e6", "domainColor": "#888888"},
            "axisX": {"labelAngle": 0},
            "legend": {"labelFontSize": 11, "titleFontSize": 12, "orient": "right"},
            "range": {"category": [*CATEGORY_COLOURS.values()]},
            "bar": {"continuousBandSize": 10},
            "background": "white",
        }
    }


# --- Volumes and when they happen --------------------------------------------------------------------


def volumes_chart(volumes: pl.DataFrame, switches: pl.DataFrame | None = None, *, measure: str = "billable_charges") -> alt.LayerChart:
    """Billable volume per month, stacked by category (`rollups.volumes`), with a rule and a label
    at every rule-set switch of `switches` (`rollups.rule_set_switches`) inside the months shown.

    `measure` may be `charges` (free and paid) or `free_charges` instead. The title says what a
    charge counts: conversations (CBP), messages (PMP), or both when the period spans the change.
    """
    data = (
        volumes.group_by("month", "category")
        .agg(pl.col(measure).sum().alias("volume"), unit=pl.col("unit").unique().sort().str.join(" / "))
        .with_columns(category_rank=_category_rank(volumes["category"]))
        .sort("month", "category_rank")
    )
    months = _month_span(data["month"])
    what = _volume_words(set(volumes["unit"].drop_nulls().to_list()), measure)
    bars = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("month:O", title="Month", scale=alt.Scale(domain=months), axis=alt.Axis(labelAngle=-45 if len(months) > 12 else 0)),
            y=alt.Y("volume:Q", title=what.capitalize(), stack="zero"),
            color=alt.Color("category:N", title="Category", scale=category_scale(data["category"])),
            order=alt.Order("category_rank:Q", sort="ascending"),
            tooltip=["month:O", "category:N", alt.Tooltip("volume:Q", title=what, format=","), "unit:N"],
        )
    )
    layers: list[alt.Chart] = [bars]
    if switches is not None and switches.height and months:
        marks = switches.select(
            month=pl.col("date").dt.strftime("%Y-%m"), date=pl.col("date").dt.strftime("%Y-%m-%d"), rule_set="rule_set", label="label"
        )
        marks = marks.filter(pl.col("month").is_in(months))
        if marks.height:
            at_month_start = alt.X("month:O", bandPosition=0)  # a switch is at 00:00 on the 1st: the bar's left edge
            layers.append(
                alt.Chart(marks)
                .mark_rule(color=SWITCH_COLOUR, strokeDash=[4, 3])
                .encode(x=at_month_start, tooltip=["date:N", "rule_set:N", "label:N"])
            )
            layers.append(
                alt.Chart(marks)
                .mark_text(align="left", baseline="top", dx=3, dy=2, fontSize=10, color=SWITCH_COLOUR)
                .encode(x=at_month_start, y=alt.value(0), text="label:N")
            )
    return alt.layer(*layers).properties(
        width=WIDTH,
        title=alt.Title(f"{what.capitalize()} per month by category", subtitle=_switch_subtitle(switches, months)),
    )


def openings_heatmap(openings: pl.DataFrame) -> alt.Chart:
    """When charges start (`rollups.openings`): conversations opened (CBP) and charged messages
    delivered (PMP), per local weekday and hour, all 168 cells."""
    return (
        alt.Chart(openings)
        .mark_rect()
        .encode(
            x=alt.X("hour:O", title="Hour (billing time zone)"),
            y=alt.Y("weekday_name:O", title="Weekday", sort=list(rollups.WEEKDAY_NAMES)),
            color=alt.Color("charges:Q", title="Charges", scale=alt.Scale(scheme="blues", zero=True)),
            tooltip=["weekday_name:O", "hour:O", alt.Tooltip("charges:Q", format=",")],
        )
        .properties(
            width=WIDTH,
            height=7 * 24,
            title=alt.Title("When charges start, by weekday and hour", subtitle="Conversations opened (CBP) and charged messages delivered (PMP)"),
        )
    )


# --- Money ------------------------------------------------------------------------------------------


def cost_by_category_chart(costs_by_month: pl.DataFrame) -> alt.Chart:
    """Cost per month stacked by category (`rollups.costs_by_month`); the subtitle counts billable
    charges without a rate, which are not in the cost."""
    data = (
        costs_by_month.filter(pl.col("billable_charges") > 0)
        .select("month", "category", "cost", "billable_charges", "unpriced_charges", "currency")
        .with_columns(category_rank=_category_rank(costs_by_month["category"]))
        .sort("month", "category_rank")
    )
    months = _month_span(costs_by_month["month"])
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("month:O", title="Month", scale=alt.Scale(domain=months), axis=alt.Axis(labelAngle=-45 if len(months) > 12 else 0)),
            y=alt.Y("cost:Q", title=_cost_title(costs_by_month), stack="zero"),
            color=alt.Color("category:N", title="Category", scale=category_scale(data["category"])),
            order=alt.Order("category_rank:Q", sort="ascending"),
            tooltip=[
                "month:O",
                "category:N",
                alt.Tooltip("cost:Q", format=",.2f"),
                "currency:N",
                alt.Tooltip("billable_charges:Q", format=","),
                alt.Tooltip("unpriced_charges:Q", format=","),
            ],
        )
        .properties(width=WIDTH, title=alt.Title("Cost per month by category", subtitle=_unpriced_subtitle(costs_by_month)))
    )


def cost_by_market_chart(costs_by_market: pl.DataFrame) -> alt.Chart:
    """Cost per market over the period (`rollups.costs_by_market`), most expensive on top."""
    data = costs_by_market.select("market", "cost", "billable_charges", "unpriced_charges", "currency")
    return (
        alt.Chart(data)
        .mark_bar(color=CATEGORY_COLOURS["marketing"])
        .encode(
            x=alt.X("cost:Q", title=_cost_title(costs_by_market)),
            y=alt.Y("market:N", title="Market", sort=data["market"].to_list()),
            tooltip=[
                "market:N",
                alt.Tooltip("cost:Q", format=",.2f"),
                "currency:N",
                alt.Tooltip("billable_charges:Q", format=","),
                alt.Tooltip("unpriced_charges:Q", format=","),
            ],
        )
        .properties(width=WIDTH, title=alt.Title("Cost by market", subtitle=_unpriced_subtitle(costs_by_market)))
    )


def free_paid_chart(free_and_paid: pl.DataFrame) -> alt.Chart:
    """Each month's charges split by pricing type (`rollups.free_and_paid`), as shares of the
    month: paid (`regular`) at the bottom, the free kinds above."""
    order = [p for p in PRICING_TYPE_COLOURS if p in set(free_and_paid["pricing_type"].to_list())]
    order += sorted(set(free_and_paid["pricing_type"].to_list()) - set(order))
    data = free_and_paid.with_columns(
        pricing_type_rank=pl.col("pricing_type").replace_strict({p: i for i, p in enumerate(order)}, return_dtype=pl.Int64)
    )
    months = _month_span(data["month"])
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("month:O", title="Month", scale=alt.Scale(domain=months), axis=alt.Axis(labelAngle=-45 if len(months) > 12 else 0)),
            y=alt.Y("share:Q", title="Share of charges", stack="zero", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(
                "pricing_type:N",
                title="Pricing type",
                scale=alt.Scale(domain=order, range=[PRICING_TYPE_COLOURS.get(p, UNKNOWN_COLOURS[0]) for p in order]),
            ),
            order=alt.Order("pricing_type_rank:Q", sort="ascending"),
            tooltip=["month:O", "pricing_type:N", "paid:N", alt.Tooltip("charges:Q", format=","), alt.Tooltip("share:Q", format=".1%")],
        )
        .properties(
            width=WIDTH, title=alt.Title("Free and paid charges per month", subtitle="Share of the month's charges by pricing type; regular is paid")
        )
    )


# --- Scenarios and projections ----------------------------------------------------------------------


def scenario_chart(comparison_table: pl.DataFrame) -> alt.HConcatChart:
    """Two panels from `Comparison.table`: each scenario's cost over the period stacked by category
    (`rollups.scenario_costs`), and what it saves against the baseline (`rollups.scenario_savings`;
    below zero: it costs more)."""
    by_category = rollups.scenario_costs(comparison_table)
    by_category = by_category.filter(pl.col("billable_charges") > 0).with_columns(category_rank=_category_rank(by_category["category"]))
    savings = (
        rollups.scenario_savings(comparison_table)
        .filter(pl.col("scenario") != BASELINE)
        .with_columns(
            effect=pl.when(pl.col("saving") > 0)
            .then(pl.lit(SAVING))
            .when(pl.col("saving") < 0)
            .then(pl.lit(EXTRA_COST))
            .when(pl.col("saving") == 0)
            .then(pl.lit(NO_CHANGE))
        )
    )
    names = comparison_table["scenario"].unique(maintain_order=True).to_list()
    cost_title = _cost_title(comparison_table)
    costs = (
        alt.Chart(by_category)
        .mark_bar()
        .encode(
            x=alt.X("scenario:N", title="Scenario", sort=names, axis=alt.Axis(labelAngle=-30)),
            y=alt.Y("cost:Q", title=cost_title, stack="zero"),
            color=alt.Color("category:N", title="Category", scale=category_scale(by_category["category"])),
            order=alt.Order("category_rank:Q", sort="ascending"),
            tooltip=[
                "scenario:N",
                "category:N",
                alt.Tooltip("cost:Q", format=",.2f"),
                alt.Tooltip("cost_difference:Q", format="+,.2f"),
                "currency:N",
            ],
        )
        .properties(width=PANEL_WIDTH, title="Cost by category")
    )
    saving_title = cost_title.replace("Cost", "Saving against baseline", 1)
    saved = (
        alt.Chart(savings)
        .mark_bar()
        .encode(
            x=alt.X("scenario:N", title="Scenario", sort=[n for n in names if n != BASELINE], axis=alt.Axis(labelAngle=-30)),
            y=alt.Y("saving:Q", title=saving_title),
            color=alt.Color(
                "effect:N",
                title="Against baseline",
                scale=alt.Scale(domain=[SAVING, NO_CHANGE, EXTRA_COST], range=[SAVING_COLOUR, NO_CHANGE_COLOUR, EXTRA_COST_COLOUR]),
            ),
            tooltip=[
                "scenario:N",
                alt.Tooltip("saving:Q", format="+,.2f"),
                alt.Tooltip("saving_share:Q", format="+.1%"),
                alt.Tooltip("cost:Q", format=",.2f"),
                "currency:N",
            ],
        )
        .properties(width=PANEL_WIDTH, title="Saving against baseline")
    )
    return (
        alt.hconcat(costs, saved)
        .resolve_scale(color="independent")  # two legends: categories, and saves / costs more
        .properties(title=alt.Title("Scenarios: cost and saving against the baseline", subtitle=_unpriced_subtitle(comparison_table)))
    )


def explanation_chart(explained: Explanation) -> alt.LayerChart:
    """A waterfall from `explained.against`'s cost to `explained.month`'s (`analytics.whatif.explain`):
    the first and last bars are the months' costs to the cent, each bar between floats from where
    the effects before it left the cost, green where an effect lowered it and red where it raised
    it, labelled with its amount. The currency effect is shown only where it is not zero."""
    shown = [e for e in EFFECTS if e != CURRENCY or explained.effects[e]]
    before, after = rounded(explained.cost_against, 2), rounded(explained.cost, 2)
    rows = [(explained.against, Decimal(0), before, f"{before:,.2f}", "month")]
    level = before
    for effect in shown:
        amount = explained.effects[effect]
        rows.append((effect, level, level + amount, f"{amount:+,.2f}", "raised" if amount > 0 else "lowered" if amount < 0 else "unchanged"))
        level += amount
    rows.append((explained.month, Decimal(0), after, f"{after:,.2f}", "month"))
    data = pl.DataFrame(
        [(step, float(start), float(end), float(max(start, end)), label, kind) for step, start, end, label, kind in rows],
        schema=["step", "start", "end", "top", "label", "kind"],
        orient="row",
    ).with_columns(currency=pl.lit(explained.currency, dtype=pl.String))
    order = data["step"].to_list()
    kinds = alt.Scale(
        domain=["month", "raised", "lowered", "unchanged"], range=[MONTH_COST_COLOUR, EXTRA_COST_COLOUR, SAVING_COLOUR, UNKNOWN_COLOURS[0]]
    )
    base = alt.Chart(data).encode(x=alt.X("step:N", title=None, sort=order, axis=alt.Axis(labelAngle=-30)))
    bars = base.mark_bar().encode(
        y=alt.Y("start:Q", title=_cost_title(data)),
        y2="end:Q",
        color=alt.Color("kind:N", title=None, scale=kinds, legend=None),
        tooltip=["step:N", alt.Tooltip("label:N", title="amount"), "currency:N"],
    )
    labels = base.mark_text(dy=-6, fontSize=11, color="#333333").encode(y="top:Q", text="label:N")
    unit = f" {explained.currency}" if explained.currency else ""
    return alt.layer(bars, labels).properties(
        width=WIDTH,
        title=alt.Title(
            f"Why the cost changed: {explained.month} against {explained.against}",
            subtitle=f"{explained.total:+,.2f}{unit}, split into effects that add up to it (Shapley values)",
        ),
    )


def projection_chart(projection_table: pl.DataFrame, *, band_for: Sequence[str] | None = (BASELINE,)) -> alt.FacetChart:
    """Projected cost per month and scenario (`rollups.projected_costs` of `Projection.table`), as
    small multiples: one panel per scenario, its line over the baseline's (dark grey, dashed) for
    reference, so lines a few cents apart are not read off one tangle of colours. With the back-test
    band (the area between `cost_low` and `cost_high`) of the scenarios in `band_for` (None: every
    scenario), drawn wherever that scenario's line is: the baseline's band in every panel by
    default. A projection of the baseline alone is one panel. Panels share the cost axis."""
    data = rollups.projected_costs(projection_table)
    names = data["scenario"].unique(maintain_order=True).to_list()
    months = _month_span(data["month"])
    panels = [n for n in names if n != BASELINE] or names
    banded = pl.col("cost_low").is_not_null() & pl.col("cost_high").is_not_null()
    if band_for is not None:
        banded = banded & pl.col("scenario").is_in(list(band_for))
    shown = pl.concat(
        [
            data.filter(pl.col("scenario").is_in([panel, BASELINE])).with_columns(panel=pl.lit(panel), panel_rank=pl.lit(rank))
            for rank, panel in enumerate(panels)
        ]
    ).with_columns(banded=banded, is_baseline=pl.col("scenario") == BASELINE)
    x = alt.X("month:O", title="Projected month", scale=alt.Scale(domain=months))
    colour = alt.Color("scenario:N", title="Scenario", sort=names, scale=scenario_scale(names), legend=None)
    band = (
        alt.Chart()
        .transform_filter("datum.banded")
        .mark_area(opacity=0.18)
        .encode(
            x=x,
            y=alt.Y("cost_low:Q"),
            y2=alt.Y2("cost_high:Q"),
            color=colour,
            tooltip=["scenario:N", "month:O", alt.Tooltip("cost_low:Q", format=",.2f"), alt.Tooltip("cost_high:Q", format=",.2f")],
        )
    )
    lines = (
        alt.Chart()
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("cost:Q", title=_cost_title(data)),
            color=colour,
            strokeDash=alt.StrokeDash("is_baseline:N", scale=alt.Scale(domain=[False, True], range=[[1, 0], [4, 3]]), legend=None),
            tooltip=[
                "scenario:N",
                "month:O",
                "horizon:Q",
                alt.Tooltip("cost:Q", format=",.2f"),
                alt.Tooltip("billable_charges:Q", format=","),
                "currency:N",
            ],
        )
    )
    with_band = shown.filter("banded")
    subtitle = [
        "One panel per scenario; dashed grey: the baseline" if panels != [BASELINE] else "The baseline: the traffic as it was, replayed forward",
        f"Band ({', '.join(with_band['scenario'].unique(maintain_order=True))}): ± the back-test's error at each horizon"
        if with_band.height
        else "No back-test: no band",
    ]
    layered = alt.layer(*([band] if with_band.height else []), lines, data=shown).properties(
        width=PROJECTION_PANEL_WIDTH, height=PROJECTION_PANEL_HEIGHT
    )
    return layered.facet(
        facet=alt.Facet("panel:N", title=None, sort=alt.EncodingSortField("panel_rank", op="min")), columns=PROJECTION_COLUMNS
    ).properties(title=alt.Title("Projected cost per month by scenario", subtitle=subtitle))


# --- Reconciliation ---------------------------------------------------------------------------------


def reconciliation_chart(reconciliation_by_month: pl.DataFrame, *, include_matches: bool = False) -> alt.Chart:
    """Items that differ from Meta's reports per month, stacked by status
    (`rollups.reconciliation_by_month`), with the reasons in the tooltip. Matches are left out
    unless `include_matches` (they dwarf the differences); every month compared is on the axis."""
    months = _month_span(reconciliation_by_month["month"].drop_nulls())
    shown = reconciliation_by_month if include_matches else reconciliation_by_month.filter(pl.col("status") != outcomes.MATCH)
    statuses = [s for s in STATUS_COLOURS if include_matches or s != outcomes.MATCH]
    rank = {s: i for i, s in enumerate(STATUS_COLOURS)}
    data = (
        shown.group_by("month", "status", "reason")
        .agg(pl.col("items").sum())
        .sort("month", "status", "reason")
        .group_by("month", "status", maintain_order=True)
        .agg(
            items=pl.col("items").sum(),
            reasons=pl.concat_str(pl.col("reason"), pl.lit(" "), pl.col("items").cast(pl.String)).str.join(", "),
        )
        .with_columns(status_rank=pl.col("status").replace_strict(rank, default=len(rank), return_dtype=pl.Int64))
        .sort("month", "status_rank")
    )
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("month:O", title="Month", scale=alt.Scale(domain=months), axis=alt.Axis(labelAngle=-45 if len(months) > 12 else 0)),
            y=alt.Y("items:Q", title="Items", stack="zero", axis=_count_axis(data.group_by("month").agg(pl.col("items").sum())["items"].max())),
            color=alt.Color("status:N", title="Status", scale=alt.Scale(domain=statuses, range=[STATUS_COLOURS[s] for s in statuses])),
            order=alt.Order("status_rank:Q", sort="ascending"),
            tooltip=["month:O", "status:N", alt.Tooltip("items:Q", format=","), "reasons:N"],
        )
        .properties(
            width=WIDTH,
            title=alt.Title(
                "Differences from Meta's reports per month" if not include_matches else "Reconciliation per month",
                subtitle="By status; matches left out" if not include_matches else "By status",
            ),
        )
    )


# --- Shared pieces ----------------------------------------------------------------------------------


def _count_axis(top: object) -> alt.Axis:
    """An axis of whole counts. Vega spaces ticks by halves on a small domain (0, 0.5, 1, ...) and
    ignores `tickMinStep` there, so up to ten the ticks are listed."""
    if isinstance(top, int) and top <= 10:
        return alt.Axis(format="d", values=list(range(top + 1)))
    return alt.Axis(format="d", tickMinStep=1)


def category_order(categories: Iterable[str | None]) -> list[str]:
    """The categories present, in the fixed order of `CATEGORY_COLOURS`, unknown ones after by name."""
    present = {c for c in categories if c is not None}
    return [c for c in CATEGORY_ORDER if c in present] + sorted(present - set(CATEGORY_ORDER))


def category_scale(categories: Iterable[str | None]) -> alt.Scale:
    """A colour scale whose colours are the fixed ones of each category present."""
    ordered = category_order(categories)
    unknown = [c for c in ordered if c not in CATEGORY_COLOURS]
    colours = [CATEGORY_COLOURS.get(c) or UNKNOWN_COLOURS[unknown.index(c) % len(UNKNOWN_COLOURS)] for c in ordered]
    return alt.Scale(domain=ordered, range=colours)


def scenario_scale(names: Sequence[str]) -> alt.Scale:
    """Scenario colours in the order given: the baseline dark grey when it comes first."""
    ordered = list(names)
    if BASELINE in ordered:
        ordered.remove(BASELINE)
        ordered.insert(0, BASELINE)
    others = iter(SCENARIO_COLOURS[1:] * (len(ordered) // len(SCENARIO_COLOURS) + 1))
    colours = [SCENARIO_COLOURS[0] if n == BASELINE else next(others) for n in ordered]
    return alt.Scale(domain=ordered, range=colours)


def _category_rank(categories: pl.Series) -> pl.Expr:
    """Each row's position in `category_order`: the stacking order, first at the bottom."""
    ordered = category_order(categories.to_list())
    return pl.col("category").replace_strict({c: i for i, c in enumerate(ordered)}, return_dtype=pl.Int64)


def _month_span(months: pl.Series) -> list[str]:
    """Every `YYYY-MM` from the first to the last of `months`, so empty months keep their place."""
    present = months.drop_nulls()
    if present.len() == 0:
        return []
    first, last = present.min(), present.max()
    span = pl.date_range(pl.lit(f"{first}-01").str.to_date(), pl.lit(f"{last}-01").str.to_date(), interval="1mo", eager=True)
    return span.dt.strftime("%Y-%m").to_list()


def _cost_title(frame: pl.DataFrame) -> str:
    currencies = sorted(set(frame["currency"].drop_nulls().to_list())) if "currency" in frame.columns else []
    return f"Cost ({', '.join(currencies)})" if currencies else "Cost"


def _unpriced_subtitle(frame: pl.DataFrame) -> str | Any:
    unpriced = int(frame["unpriced_charges"].sum()) if "unpriced_charges" in frame.columns and frame.height else 0
    if not unpriced:
        return alt.Undefined
    return f"{unpriced:,} billable charges have no rate in the card and are not in the cost"


def _volume_words(units: set[str], measure: str) -> str:
    kind = {"billable_charges": "billable", "free_charges": "free", "charges": ""}.get(measure, measure)
    nouns = [u for u in (rollups.CONVERSATIONS, rollups.MESSAGES) if u in units] or ["charges"]
    return " ".join(w for w in (kind, " and ".join(nouns)) if w)


def _switch_subtitle(switches: pl.DataFrame | None, months: Sequence[str]) -> str | Any:
    if switches is None or not switches.height or not months:
        return alt.Undefined
    inside = switches.filter(pl.col("date").dt.strftime("%Y-%m").is_in(list(months)))
    return "Dashed lines: rule-set switches (billing-rules.md §1)" if inside.height else alt.Undefined
