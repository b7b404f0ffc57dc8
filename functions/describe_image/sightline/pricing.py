"""The pricing table: what a model's tokens cost. Pure: parsing and arithmetic, no I/O beyond reading the file."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sightline.errors import SettingsError

# functions/describe_image/pricing.toml: /var/task/pricing.toml in the deployed function.
BUNDLED_PRICING_FILE = str(Path(__file__).resolve().parent.parent / "pricing.toml")

ImageTokenRule = Literal["patch28", "tiles512"]
IMAGE_TOKEN_RULES: tuple[ImageTokenRule, ...] = ("patch28", "tiles512")
MICROS = 1_000_000  # costs are kept in millionths of the currency unit: integers, exact in DynamoDB counters


@dataclass(frozen=True)
class ModelPrice:
    model_id: str
    input_per_million: float
    output_per_million: float
    currency: str
    image_tokens: ImageTokenRule = "patch28"
    provider: str = ""

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """In the currency unit (e.g. dollars)."""
        return (prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million) / 1_000_000

    def cost_micros(self, prompt_tokens: int, completion_tokens: int) -> int:
        """In millionths of the currency unit, rounded up: a budget never under-counts."""
        return math.ceil(self.cost(prompt_tokens, completion_tokens) * MICROS - 1e-9)


@dataclass(frozen=True)
class PriceTable:
    currency: str
    models: dict[str, ModelPrice]
    source: str = ""

    def for_model(self, model_id: str) -> ModelPrice | None:
        return self.models.get(model_id)


def _price(model_id: str, entry: Any, currency: str, source: str) -> ModelPrice:
    if not isinstance(entry, dict):
        raise SettingsError(f"{source}: models.{model_id!r} must be a table")
    values = {}
    for name in ("input_per_million", "output_per_million"):
        value = entry.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise SettingsError(f"{source}: models.{model_id!r}.{name} must be a price of at least 0, got {value!r}")
        values[name] = float(value)
    rule = entry.get("image_tokens", "patch28")
    if rule not in IMAGE_TOKEN_RULES:
        raise SettingsError(
            f"{source}: models.{model_id!r}.image_tokens must be one of {', '.join(IMAGE_TOKEN_RULES)}, got {rule!r}"
        )
    if entry.get("currency", currency) != currency:
        raise SettingsError(f"{source}: models.{model_id!r} is priced in another currency than the file's {currency}")
    return ModelPrice(
        model_id=model_id,
        input_per_million=values["input_per_million"],
        output_per_million=values["output_per_million"],
        currency=currency,
        image_tokens=rule,
        provider=str(entry.get("provider", "")),
    )


def parse_prices(text: str, source: str = "pricing table") -> PriceTable:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{source} is not valid TOML: {exc}") from None
    currency = document.get("currency", "USD")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
        raise SettingsError(f"{source}: currency must be an ISO 4217 code such as USD, got {currency!r}")
    models = document.get("models", {})
    if not isinstance(models, dict):
        raise SettingsError(f"{source}: models must be a table of model ids")
    return PriceTable(
        currency=currency.upper(),
        models={str(name): _price(str(name), entry, currency.upper(), source) for name, entry in models.items()},
        source=source,
    )


def load_prices(path: str | None = None) -> PriceTable:
    path = path or BUNDLED_PRICING_FILE
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read the pricing table {path}: {exc.strerror or exc}") from None
    return parse_prices(text, source=path)


def image_tokens(rule: ImageTokenRule, width: int, height: int, detail: str = "auto") -> int:
    """What a provider bills for one image of this size as sent, by its rule (see pricing.toml)."""
    if width <= 0 or height <= 0:
        return 0
    if rule == "tiles512":
        if detail == "low":
            return 85
        scale = min(1.0, 2048 / max(width, height))
        w, h = width * scale, height * scale
        scale = min(1.0, 768 / min(w, h))
        w, h = w * scale, h * scale
        return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)
    return math.ceil(width / 28) * math.ceil(height / 28)
