"""A demo training set: customer-service chats for Fernhollow, a fictional
homeware shop.

Every answer is built from the facts in ``SHOP``, so a model fine-tuned on
the set can learn them, and ``demo_prompts()`` asks about the same facts in
words the set never uses. The shop, its address, phone number, website and
carrier are invented; the phone number lies in a range reserved for
fiction.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from typing import Any

Turn = tuple[str, str]
Intent = Callable[[random.Random], list[Turn]]

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _week(weekday: str, saturday: str) -> dict[str, str | None]:
    return {day: weekday for day in _WEEKDAYS[:5]} | {"Saturday": saturday, "Sunday": None}


SHOP: dict[str, Any] = {
    "name": "Fernhollow",
    "what": "a homeware shop selling tableware, kitchen goods, textiles and candles",
    "website": "fernhollow.example",
    "email": "help@fernhollow.example",
    "phone": "0117 496 0732",
    "store_address": "14 Quayside Row, Bristol",
    "service_hours": _week("09:00-18:00", "10:00-16:00"),
    "store_hours": _week("10:00-18:00", "10:00-17:00"),
    "store_payment": "card, contactless or cash",
    "return_days": 30,
    "return_label_free_over": 40,
    "return_label_price": 3.95,
    "refund_time": "5 working days",
    "free_shipping_over": 60,
    "shipping": {
        "uk_standard": {"name": "UK standard", "price": 3.95, "time": "2-4 working days"},
        "uk_express": {
            "name": "UK express",
            "price": 7.95,
            "time": "1 working day (order by 14:00, Monday to Friday)",
        },
        "eu": {"name": "EU", "price": 9.95, "time": "5-8 working days"},
        "world": {"name": "rest of the world", "price": 19.95, "time": "7-14 working days"},
    },
    "dispatch_time": "1-2 working days",
    "carrier": "Heron Parcels",
    "order_prefix": "FH-",
    "order_digits": 6,
    "tracking_prefix": "HP",
    "order_statuses": ("processing", "shipped", "delivered", "delayed"),
    "payment_methods": (
        *("Visa", "Mastercard", "American Express", "PayPal", "Apple Pay", "Google Pay"),
        "Fernhollow gift cards",
    ),
    "warranty_years": 2,
    "gift_card_min": 10,
    "gift_card_max": 200,
    "gift_card_valid_months": 24,
    # Each care note finishes "Here's how to look after your <product>: ";
    # product names start with a consonant to suit "a {p}" in the templates.
    "care": {
        "stoneware mug": "it is dishwasher and microwave safe; just avoid sudden changes "
        "from very hot to very cold",
        "linen tablecloth": "machine wash it at 40°C, line dry, and iron it while still "
        "slightly damp",
        "walnut chopping board": "hand wash it only, dry it standing upright, and rub in a "
        "little food-safe oil once a month",
        "soy wax candle": "trim the wick to 5 mm before lighting and burn it for no more "
        "than 4 hours at a time",
        "wool throw": "hand wash it in cold water or have it dry cleaned, then dry it flat",
        "cast-iron casserole dish": "wash it by hand with a soft sponge and dry it straight "
        "away; metal scourers will scratch the enamel",
        "glass carafe": "it is dishwasher safe on the top rack",
        "cotton cushion cover": "machine wash it inside out at 30°C and skip the tumble dryer",
        "ceramic vase": "wipe it with a damp cloth; it is not dishwasher safe",
        "bamboo bath mat": "rinse it now and then and let it dry flat, away from radiators",
        "rattan basket": "dust it with a dry brush and keep it out of damp rooms",
    },
}

DEMO_SYSTEM_PROMPT = (
    f"You are the customer-service assistant of {SHOP['name']}, {SHOP['what']}, "
    f"online at {SHOP['website']} and with a store at {SHOP['store_address']}. "
    "Answer briefly and kindly, only with facts about the shop, and steer other "
    "topics back to how you can help."
)

_PRODUCTS = tuple(SHOP["care"])
_NAMES = ("Amelia", "Tom", "Priya", "Jonas", "Chloe", "Marek", "Fatima", "Oliver", "Sofia",
          "Ravi", "Hannah", "Luca", "Niamh", "Kwame", "Isla", "Ben", "Yuki", "Elena")  # fmt: skip
_UK = ("Leeds", "Glasgow", "Cardiff", "Belfast", "Norwich", "Brighton", "the UK")
_EU = ("France", "Germany", "Spain", "Italy", "the Netherlands", "Ireland", "Portugal",
       "Belgium", "Austria", "Denmark", "Sweden", "Poland")  # fmt: skip
_WORLD = ("the USA", "Canada", "Australia", "Japan", "Norway", "Switzerland",
          "New Zealand", "Singapore")  # fmt: skip
_DAMAGE = ("broken", "cracked", "chipped", "damaged", "smashed", "in pieces", "badly scratched")
_GREETINGS = ("", "", "", "", "Hi! ", "Hello! ", "Hi there. ", "Good morning! ", "Hey! ")


def _sections(text: str) -> dict[str, tuple[str, ...]]:
    """Parse "[name]" headers, each followed by one template a line."""
    sections: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in text.strip().splitlines():
        if line.startswith("["):
            lines = sections.setdefault(line.strip("[]"), [])
        else:
            lines.append(line)
    return {name: tuple(lines) for name, lines in sections.items()}


# What customers write, by intent; the intents below fill in the fields.
_ASK = _sections(
    """
[status]
Where is my order {o}?
Can you check the status of order {o}?
Hi, this is {n}. Any news on {o}?
has {o} shipped yet?
I ordered a {p} last week, order number {o}. When will it arrive?
wheres my parcel?? order {o}
Could you tell me when {o} will be delivered?
order no. {o} - status?
My order {o} still hasn't arrived, what's going on?
Can I get the tracking number for {o}, please?
Is there an update on my {p}? It's order {o}.
[status_no_number]
Where's my order?
My parcel hasn't arrived yet.
can you check my order status
When will my stuff arrive?
I haven't received my delivery, can you help?
i still havent recieved my order
Has my {p} been sent out yet?
how do i track my order
I'm still waiting for my {p}.
[reply]
{o}
It's {o}
sure, {o}
The order number is {o}.
{o} thanks
[wrong_number]
it's {w}
{w}
Order number {w}
[reply_after_wrong]
sorry, it's {o}
oops, {o}
Found it: {o}
[service_hours]
When is customer service available?
what are your customer service hours
What times can I phone you?
When can I reach someone on the phone?
What hours is your helpline open?
when r u guys available for calls
Until what time can I call customer service?
[service_day]
Can I call you on {d}?
Is customer service open on {d}?
What time does your helpline open on {d}?
is anyone answering the phone on {d}
Can I reach your support team on a {d}?
[store_hours]
When is the Bristol store open?
What are the opening times of your shop?
Do you have a physical shop? When can I visit?
opening times for the store pls
When can I pop into the shop on Quayside Row?
what are the store hours
[store_day]
Is the shop open on {d}?
What time does the store close on {d}?
What time does your Bristol shop open on {d}?
can i visit the store on {d}
Are you open this {d}?
What are the store's hours on a {d}?
[return_policy]
What's your return policy?
whats ur return policy
How do returns work?
Can I send something back if I don't like it?
how long do i have to send stuff back
What are the rules for returning an item?
[return_late]
I bought a {p} {n} days ago. Can I still return it?
Got my {p} {n} days ago and changed my mind, can I send it back?
Is it too late to return a {p} that arrived {n} days ago?
[return_label]
My order was £{a}. Do I have to pay for the return label?
Is returning free? I spent £{a}.
do i pay return postage on a £{a} order
[refund]
When will I get my refund?
I sent back a {p} last week. Where's my money?
How long do refunds take?
still no refund for my returned {p}??
[return_used]
Can I return a {p} I've already used?
I washed the {p} once, can I still return it?
[return_in_store]
Can I return an online order at the Bristol shop?
Could I bring my {p} back to the store instead of posting it?
[ship_to]
How much does it cost to send an order to {c}?
Do you ship to {c}?
what's the delivery cost to {c}
How long does delivery to {c} take?
I live in {c}. Can I order from you?
[free_shipping]
Do you offer free delivery?
Is there free shipping?
how much do I need to spend for free shipping?
If I order £{a} worth of things, do I pay for delivery?
My basket is £{a}. Is shipping free?
[express]
Do you have next-day delivery?
How fast can I get a {p}?
what's the express option
I need a {p} by tomorrow, is that possible?
[ship_options]
What shipping options do you have?
list your delivery options please
What are the delivery prices?
How much is postage?
[damaged]
My {p} arrived {d}.
The {p} I ordered came {d} :(
Order {o}: the {p} was {d} when I opened the box.
what do I do, my {p} is {d}
Hi, I'm {n}. Unfortunately the {p} was {d} on arrival. What now?
[address]
I need to change the delivery address for {o}.
wrong address on my order {o}!!
need to change the adress on {o} please
Can you send {o} to my work address instead?
I've moved. Can I update the address on order {o}?
[cancel]
I want to cancel order {o}.
please cancel {o}, i ordered the wrong {p}
Can I still cancel {o}?
Changed my mind about the {p}. Can you cancel order {o}?
[care]
How do I clean my {p}?
Is the {p} dishwasher safe?
Any tips for looking after a {p}?
how should i wash the {p}
Care instructions for the {p}?
I just bought your {p}. How do I keep it nice?
[warranty_claim]
My {p} fell apart after {m} months. Is that covered?
The {p} I bought {m} months ago has a defect, what can I do?
[contact]
How can I contact you?
What's your phone number?
what is your email address
I'd like to talk to a real person.
[small_talk]
How are you today?
Are you a real person?
What's the weather like in Bristol?
Can you recommend a good film?
Tell me a joke
can you help me with my maths homework
Who won the football last night?
Write me a poem about candles.
What's the capital of Peru?
are you chatgpt?
[pay_with]
Can I pay with {m}?
Do you take {m}?
is {m} accepted?
[pay_methods]
What payment methods can I use?
How can I pay?
What cards work?
payment options?
[pay_in_store]
Can I pay cash in the shop?
Does the Bristol store take cards?
[pay_when]
When is my card charged?
When do you take the payment?
[gift_amount]
Can I buy a £{a} gift card?
do you do gift vouchers for £{a}
[gift_valid]
How long is a gift card valid?
do gift cards expire?
Is there an expiry date on gift vouchers?
[gift_where]
Can I use my gift card at the shop on Quayside Row?
Do gift cards work online too?
[gift_cash]
Can I swap a gift card for cash?
can i get a refund on a gift card
[warranty]
Do your products have a warranty?
is there a guarantee?
How long is the warranty on your products?
"""
)


def _pick(rng: random.Random, intent: str, **fields: object) -> str:
    """Return one way of asking for intent, with fields filled in."""
    return rng.choice(_ASK[intent]).format(**fields)


def _money(amount: float) -> str:
    return f"£{amount:.2f}" if amount % 1 else f"£{amount:.0f}"


def _hours_open(hours: dict[str, str | None]) -> str:
    """Return the open days and hours, e.g. "Monday to Friday 09:00-18:00
    and Saturday 10:00-16:00"; consecutive days with equal hours share a
    range."""
    groups: list[tuple[str, str, str]] = []
    for day, value in hours.items():
        if value is None:
            continue
        if groups and groups[-1][2] == value:
            groups[-1] = (groups[-1][0], day, value)
        else:
            groups.append((day, day, value))
    return " and ".join((f"{a} to {b}" if a != b else a) + f" {v}" for a, b, v in groups)


def _hours_week(hours: dict[str, str | None]) -> str:
    """Return the open hours followed by the closed days."""
    closed = " and ".join(f"{day}s" for day, value in hours.items() if value is None)
    return f"{_hours_open(hours)}, closed on {closed}"


_SERVICE_OPEN = _hours_open(SHOP["service_hours"])
_STORE_OPEN = _hours_open(SHOP["store_hours"])
_SERVICE = _hours_week(SHOP["service_hours"])
_STORE = _hours_week(SHOP["store_hours"])
_SHIP = SHOP["shipping"]
_FREE = _money(SHOP["free_shipping_over"])
_EMAIL, _PHONE, _CARRIER = SHOP["email"], SHOP["phone"], SHOP["carrier"]
_DAYS, _WARRANTY = SHOP["return_days"], SHOP["warranty_years"]
_RETURNS = (
    f"You can return unused items in their original packaging within {_DAYS} days of "
    f"delivery. The return label is free for orders over {_money(SHOP['return_label_free_over'])}"
    f" and costs {_money(SHOP['return_label_price'])} otherwise."
)
_REFUND = (
    f"Refunds go back to your original payment method within {SHOP['refund_time']} of "
    "the return reaching our warehouse."
)


_ORDER_FORMAT = f"{SHOP['order_prefix']} followed by {SHOP['order_digits']} digits"


def _order_number(rng: random.Random) -> str:
    digits = SHOP["order_digits"]
    return f"{SHOP['order_prefix']}{rng.randrange(10**digits):0{digits}d}"


def _as_typed(rng: random.Random, order: str) -> str:
    """Write an order number the way customers do."""
    return rng.choice((order, order, order, order.replace("-", ""), order.lower()))


def _ship_line(key: str) -> str:
    option = _SHIP[key]
    return f"{option['name']} shipping costs {_money(option['price'])} and takes {option['time']}"


def _status_answer(rng: random.Random, order: str) -> str:
    status = rng.choice(SHOP["order_statuses"])
    day = rng.choice(_WEEKDAYS[:5])
    if status == "processing":
        return (
            f"Order {order} is being packed in our warehouse. Orders leave us within "
            f"{SHOP['dispatch_time']}, and you'll get an email with the {_CARRIER} tracking "
            "number as soon as it ships."
        )
    if status == "shipped":
        tracking = f"{SHOP['tracking_prefix']}{rng.randrange(10**10):010d}"
        option = _SHIP[rng.choice(("uk_standard", "uk_standard", "uk_express"))]
        return (
            f"Good news: order {order} shipped on {day} with {_CARRIER}. Your tracking number "
            f"is {tracking}, and {option['name']} delivery takes {option['time']}."
        )
    if status == "delivered":
        return (
            f"Order {order} was delivered on {day}. If you can't find it, check with your "
            f"neighbours or your safe place, and if it hasn't turned up, email {_EMAIL} and "
            f"we'll chase it with {_CARRIER}."
        )
    reason = rng.choice(
        (
            "one of the items is waiting for new stock",
            f"{_CARRIER} has a backlog in your area",
            "bad weather held up vans at the depot",
        )
    )
    return (
        f"I'm sorry, order {order} is delayed because {reason}. It should now arrive by "
        f"next {day}, and we'll email you as soon as it moves again."
    )


def _order_status(rng: random.Random) -> list[Turn]:
    order = _order_number(rng)
    fields = {"o": _as_typed(rng, order), "n": rng.choice(_NAMES), "p": rng.choice(_PRODUCTS)}
    if rng.random() < 0.6:
        question = _pick(rng, "status", **fields)
        return [(question, _status_answer(rng, order))]
    question = _pick(rng, "status_no_number", **fields)
    ask = (
        f"I can check that for you. What's your order number? It's {_ORDER_FORMAT} "
        "and is in your order confirmation email."
    )
    turns = [(question, ask)]
    reply = "reply"
    if rng.random() < 0.25:
        wrong = f"{rng.randrange(10**5):05d}"
        turns.append(
            (
                _pick(rng, "wrong_number", w=wrong),
                f"That doesn't look like one of our order numbers: they're "
                f"{_ORDER_FORMAT}, for example {_order_number(rng)}. Could you check your "
                "confirmation email?",
            )
        )
        reply = "reply_after_wrong"
    turns.append((_pick(rng, reply, **fields), _status_answer(rng, order)))
    return turns


def _service_hours(rng: random.Random) -> list[Turn]:
    if rng.random() < 0.5:
        question = _pick(rng, "service_hours")
        answer = f"Our customer service team is available {_SERVICE}. Call us on {_PHONE} or "
        return [(question, answer + f"email {_EMAIL}.")]
    day = rng.choice(_WEEKDAYS)
    hours = SHOP["service_hours"][day]
    question = _pick(rng, "service_day", d=day)
    if hours is None:
        answer = (
            f"Customer service is closed on {day}s. We're available {_SERVICE_OPEN}, and "
            f"you can email {_EMAIL} any time."
        )
    else:
        answer = f"Yes, on {day}s our customer service is available {hours} on {_PHONE}."
    return [(question, answer)]


def _store_hours(rng: random.Random) -> list[Turn]:
    where = SHOP["store_address"]
    if rng.random() < 0.4:
        question = _pick(rng, "store_hours")
        return [(question, f"Our store at {where} is open {_STORE}.")]
    day = rng.choice(_WEEKDAYS)
    hours = SHOP["store_hours"][day]
    question = _pick(rng, "store_day", d=day)
    if hours is None:
        return [(question, f"Our store is closed on {day}s. It's open {_STORE_OPEN}.")]
    return [(question, f"On {day}s our store at {where} is open {hours}.")]


def _returns(rng: random.Random) -> list[Turn]:
    product = rng.choice(_PRODUCTS)
    kind = rng.randrange(6)
    if kind == 0:
        question = _pick(rng, "return_policy")
        return [(question, f"{_RETURNS} {_REFUND}")]
    if kind == 1:
        days = rng.choice((3, 7, 10, 12, 18, 21, 25, 28, 35, 40, 45, 60, 90))
        question = _pick(rng, "return_late", p=product, n=days)
        if days <= _DAYS:
            answer = (
                f"Yes, you're within our {_DAYS} days. Start the return under “My orders” in "
                "your account, and please send the item back unused in its original packaging."
            )
        else:
            answer = (
                f"I'm sorry, returns are accepted within {_DAYS} days of delivery, so that one "
                f"is too late to send back. If it's faulty, our {_WARRANTY}-year warranty "
                "covers it."
            )
        return [(question, answer)]
    if kind == 2:
        amount = rng.choice((12, 18, 25, 32, 38, 45, 52, 70, 85, 120))
        question = _pick(rng, "return_label", a=amount)
        limit = _money(SHOP["return_label_free_over"])
        if amount > SHOP["return_label_free_over"]:
            return [(question, f"No, the return label is free for orders over {limit}.")]
        price = _money(SHOP["return_label_price"])
        answer = (
            f"The return label costs {price} for your order; it's free for orders over {limit}."
        )
        return [(question, answer)]
    if kind == 3:
        question = _pick(rng, "refund", p=product)
        return [(question, f"{_REFUND} You'll get an email as soon as it's processed.")]
    if kind == 4:
        question = _pick(rng, "return_used", p=product)
        answer = (
            "We can only take back unused items in their original packaging. If it's faulty, "
            f"though, our {_WARRANTY}-year warranty covers it; email {_EMAIL} with a photo and "
            "your order number."
        )
        return [(question, answer)]
    question = _pick(rng, "return_in_store", p=product)
    answer = (
        f"Yes, you can return online orders at our store at {SHOP['store_address']} within "
        f"{_DAYS} days of delivery. Bring the item unused with your order number."
    )
    return [(question, answer)]


def _shipping(rng: random.Random) -> list[Turn]:
    kind = rng.randrange(4)
    if kind == 0:
        place = rng.choice(_UK + _EU + _WORLD)
        question = _pick(rng, "ship_to", c=place)
        if place in _UK:
            answer = (
                f"{_ship_line('uk_standard')}, and it's free on orders over {_FREE}. "
                f"{_ship_line('uk_express')}."
            )
        else:
            answer = (
                f"Yes, we deliver to {place}. {_ship_line('eu' if place in _EU else 'world')}."
            )
        return [(question, answer)]
    standard = _money(_SHIP["uk_standard"]["price"])
    if kind == 1:
        amount = rng.choice((15, 24, 35, 48, 55, 59, 65, 72, 80, 95, 150))
        question = _pick(rng, "free_shipping", a=amount)
        if "£" not in question:
            answer = (
                f"UK standard delivery is free on orders over {_FREE}; below that it costs "
                f"{standard}."
            )
        elif amount > SHOP["free_shipping_over"]:
            answer = f"Yes, UK standard delivery is free on orders over {_FREE}."
        else:
            answer = (
                f"UK standard delivery is {standard} for that basket; delivery becomes free on "
                f"orders over {_FREE}."
            )
        return [(question, answer)]
    if kind == 2:
        question = _pick(rng, "express", p=rng.choice(_PRODUCTS))
        answer = f"{_ship_line('uk_express')}. It's our fastest option, within the UK only."
        return [(question, answer)]
    question = _pick(rng, "ship_options")
    lines = [
        f"- {o['name'][0].upper()}{o['name'][1:]}: {_money(o['price'])}, {o['time']}"
        for o in _SHIP.values()
    ]
    answer = "Here are our options:\n" + "\n".join(lines)
    return [(question, f"{answer}\nUK standard delivery is free on orders over {_FREE}.")]


def _payment(rng: random.Random) -> list[Turn]:
    methods = SHOP["payment_methods"]
    listed = ", ".join(methods[:-1]) + " and " + methods[-1]
    kind = rng.randrange(4)
    if kind == 0:
        method = rng.choice((*methods[:-1], "Klarna", "bank transfer", "a cheque", "Bitcoin"))
        question = _pick(rng, "pay_with", m=method)
        if method in methods:
            return [(question, f"Yes, we accept {method}. You can also pay with {listed}.")]
        return [(question, f"I'm sorry, we don't accept {method}. You can pay with {listed}.")]
    if kind == 1:
        question = _pick(rng, "pay_methods")
        return [(question, f"You can pay with {listed}.")]
    if kind == 2:
        question = _pick(rng, "pay_in_store")
        return [(question, f"Our Bristol store takes {SHOP['store_payment']}.")]
    question = _pick(rng, "pay_when")
    return [(question, "We take the payment when you place your order.")]


def _damaged(rng: random.Random) -> list[Turn]:
    product, damage = rng.choice(_PRODUCTS), rng.choice(_DAMAGE)
    question = _pick(
        rng, "damaged", p=product, d=damage, o=_order_number(rng), n=rng.choice(_NAMES)
    )
    answer = (
        f"I'm so sorry your {product} arrived {damage}. Please email a photo of it and the "
        f"packaging to {_EMAIL} with your order number, and we'll send a free replacement or "
        "a full refund, whichever you prefer. There's no need to send it back."
    )
    return [(question, answer)]


def _address(rng: random.Random) -> list[Turn]:
    order = _order_number(rng)
    question = _pick(rng, "address", o=_as_typed(rng, order))
    if rng.random() < 0.6:
        answer = (
            f"Order {order} hasn't left our warehouse yet, so the address can still be "
            f"changed. Reply to your order confirmation email with the new address, or call "
            f"us on {_PHONE}, and the team will update it."
        )
    else:
        answer = (
            f"Order {order} has already shipped with {_CARRIER}, so we can no longer change "
            f"the address. The {_CARRIER} tracking link in your shipping email lets you choose "
            "a neighbour or a pickup point instead."
        )
    return [(question, answer)]


def _cancel(rng: random.Random) -> list[Turn]:
    order = _order_number(rng)
    question = _pick(rng, "cancel", o=_as_typed(rng, order), p=rng.choice(_PRODUCTS))
    if rng.random() < 0.6:
        answer = (
            f"Order {order} hasn't shipped yet, so you can cancel it under “My orders” in "
            f"your account. The refund reaches your original payment method within "
            f"{SHOP['refund_time']}."
        )
    else:
        answer = (
            f"Order {order} has already shipped, so it can't be cancelled. Once it arrives you "
            f"can return it within {_DAYS} days of delivery."
        )
    return [(question, answer)]


def _care(rng: random.Random) -> list[Turn]:
    product = rng.choice(_PRODUCTS)
    question = _pick(rng, "care", p=product)
    return [(question, f"Here's how to look after your {product}: {SHOP['care'][product]}.")]


def _gift_cards(rng: random.Random) -> list[Turn]:
    low, high = _money(SHOP["gift_card_min"]), _money(SHOP["gift_card_max"])
    months = SHOP["gift_card_valid_months"]
    kind = rng.randrange(4)
    if kind == 0:
        amount = rng.choice((5, 15, 20, 25, 50, 75, 100, 150, 250, 500))
        question = _pick(rng, "gift_amount", a=amount)
        if SHOP["gift_card_min"] <= amount <= SHOP["gift_card_max"]:
            return [
                (
                    question,
                    f"Yes, gift cards come in any amount from {low} to {high}, sent by email.",
                )
            ]
        return [
            (question, f"Gift cards come in any amount from {low} to {high}, so not £{amount}.")
        ]
    if kind == 1:
        question = _pick(rng, "gift_valid")
        return [(question, f"Our gift cards are valid for {months} months from purchase.")]
    if kind == 2:
        question = _pick(rng, "gift_where")
        return [(question, "Yes, gift cards work both online and in our Bristol store.")]
    question = _pick(rng, "gift_cash")
    answer = f"Gift cards can't be exchanged for cash, but they're valid for {months} months."
    return [(question, answer)]


def _warranty_contact(rng: random.Random) -> list[Turn]:
    kind = rng.randrange(3)
    if kind == 0:
        months = rng.choice((3, 6, 8, 11, 14, 18, 22, 30, 36))
        product = rng.choice(_PRODUCTS)
        question = _pick(rng, "warranty_claim", p=product, m=months)
        if months < _WARRANTY * 12:
            answer = (
                f"Yes, everything we sell has a {_WARRANTY}-year warranty against "
                f"manufacturing defects. Email {_EMAIL} with a photo and your order number."
            )
        else:
            answer = (
                f"I'm sorry, our warranty covers manufacturing defects for {_WARRANTY} years, "
                f"so a {product} bought {months} months ago is no longer covered."
            )
        return [(question, answer)]
    if kind == 1:
        question = _pick(rng, "warranty")
        answer = (
            f"Yes, everything has a {_WARRANTY}-year warranty against manufacturing defects; "
            "it doesn't cover wear and tear or accidents."
        )
        return [(question, answer)]
    question = _pick(rng, "contact")
    return [(question, f"You can call us on {_PHONE} ({_SERVICE}) or email {_EMAIL}.")]


def _small_talk(rng: random.Random) -> list[Turn]:
    question = _pick(rng, "small_talk")
    name = SHOP["name"]
    if question.startswith("How are"):
        answer = "I'm well, thanks for asking! Is there anything I can help you with today?"
    elif question.lower().startswith("are you"):
        answer = (
            f"I'm the automated assistant of {name}. To talk to a person, call {_PHONE} or "
            f"email {_EMAIL}."
        )
    else:
        answer = rng.choice(
            (
                f"I'm afraid I can only help with {name}: orders, deliveries, returns, products "
                "and our Bristol store. Is there anything like that I can do for you?",
                "That's outside what I can help with, sorry! I'm happy to answer questions "
                f"about your {name} orders, our products or the store.",
            )
        )
    return [(question, answer)]


_INTENTS: tuple[tuple[Intent, int], ...] = (
    (_order_status, 20),
    (_returns, 12),
    (_shipping, 13),
    (_store_hours, 7),
    (_service_hours, 6),
    (_payment, 6),
    (_damaged, 6),
    (_address, 5),
    (_cancel, 5),
    (_care, 7),
    (_gift_cards, 5),
    (_warranty_contact, 4),
    (_small_talk, 4),
)
_CLOSERS: tuple[Turn, ...] = (
    ("thanks!", "You're welcome! Anything else, just ask."),
    ("Great, thank you so much.", "Happy to help. Have a lovely day!"),
    ("ok cheers", "Cheers! Let me know if there's anything else."),
    ("Perfect, that's all.", f"Glad I could help. Thanks for shopping with {SHOP['name']}!"),
)
_JOINS = ("", "One more thing: ", "Also, ", "And another question. ")


def _casual(rng: random.Random, text: str) -> str:
    """Vary the surface of a user message the way real customers do."""
    roll = rng.random()
    if roll < 0.1:
        return text.lower()
    if roll < 0.18:
        return text.rstrip("?.!")
    return text


def _conversation(rng: random.Random) -> list[dict[str, str]]:
    intents, weights = zip(*_INTENTS, strict=True)
    turns = rng.choices(intents, weights)[0](rng)
    # About a quarter of the single-question chats go on: another question,
    # a thank-you, or both, so that the model also learns to hold a thread.
    if len(turns) == 1 and rng.random() < 0.27:
        if rng.random() < 0.5:
            question, answer = rng.choices(intents, weights)[0](rng)[0]
            turns.append((rng.choice(_JOINS) + question, answer))
        if len(turns) == 1 or rng.random() < 0.3:
            turns.append(rng.choice(_CLOSERS))
    messages = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": DEMO_SYSTEM_PROMPT})
    for index, (question, answer) in enumerate(turns):
        text = _casual(rng, question)
        if index == 0 and not text.lower().startswith("hi"):
            text = rng.choice(_GREETINGS) + text
        messages.append({"role": "user", "content": text})
        messages.append({"role": "assistant", "content": answer})
    return messages


def demo_conversations(*, count: int = 300, seed: int = 0) -> list[list[dict[str, str]]]:
    """Return ``count`` distinct demo conversations in the training format.

    The same seed gives the same conversations. Raise ``ValueError`` for a
    negative count or one beyond what the templates can make distinct.
    """
    if count < 0:
        raise ValueError(f"count must be 0 or more (got {count})")
    # Reproducible data, not security.
    rng = random.Random(seed)  # noqa: S311
    conversations: list[list[dict[str, str]]] = []
    seen: set[str] = set()
    for _ in range(count * 20 + 100):
        if len(conversations) == count:
            break
        conversation = _conversation(rng)
        key = json.dumps(conversation)
        if key not in seen:
            seen.add(key)
            conversations.append(conversation)
    if len(conversations) < count:
        raise ValueError(f"cannot make {count} distinct conversations")
    return conversations


def demo_prompts() -> list[str]:
    """Return 8 fixed questions about SHOP's facts, worded unlike any user
    message in the demo set, for comparing checkpoints' answers."""
    return [
        "What are your opening hours on Saturday?",
        "How long do I have to return something I bought?",
        "How much is shipping to France?",
        "Is the Bristol shop open on Sundays?",
        "My order number is FH-314159. Where is it?",
        "Which payment methods do you accept?",
        "Do I have to pay for delivery if my order is £75?",
        "Can I use a gift card in your store?",
    ]


#: Wrong words a plausible but wrong answer puts in place of right ones.
_WRONG_WORDS = (
    ("Heron Parcels", "Royal Mail"),
    ("Bristol", "Bath"),
    ("not dishwasher safe", "dishwasher safe"),
    ("dishwasher safe", "not dishwasher safe"),
    ("hand wash", "machine wash"),
    ("Saturday", "Sunday"),
    ("free", "charged"),
    ("Yes", "No"),
)
_UNHELPFUL = (
    "I'm not sure about that, sorry. You could check our website.",
    "I don't have that information. Please try again later.",
    "That depends. It's best to look it up yourself.",
)


def _wrong_number(rng: random.Random, match: re.Match[str]) -> str:
    text = match.group(0)
    if "." in text:
        whole, cents = text.split(".")
        return f"{int(whole) + rng.choice((1, 2, 5))}.{cents}"
    value = int(text)
    changed = value + rng.choice((-1, 1)) * rng.randint(1, max(2, value // 2))
    if changed < 0 or changed == value:
        changed = value + 3
    return str(changed).zfill(len(text)) if text.startswith("0") else str(changed)


def _wrong(rng: random.Random, answer: str) -> str:
    """A plausible wrong answer: one fact changed (a number, a name, a
    yes for a no), else an unhelpful brush-off."""
    numbers = list(re.finditer(r"\d+(?:\.\d+)?", answer))
    if numbers:
        pick = rng.choice(numbers)
        return answer[: pick.start()] + _wrong_number(rng, pick) + answer[pick.end() :]
    for right, wrong in _WRONG_WORDS:
        if right in answer:
            return answer.replace(right, wrong, 1)
    return rng.choice(_UNHELPFUL)


def demo_preference_pairs(*, count: int = 240, seed: int = 1) -> list[dict[str, Any]]:
    """Return ``count`` distinct preference pairs for the demo shop: a
    prompt (a demo conversation up to its last question), the correct
    answer as chosen and a plausible wrong one (``_wrong``) as rejected,
    in the upload format. Thank-you closers are left out."""
    rng = random.Random(seed)  # noqa: S311 (reproducible data)
    closers = {answer for _question, answer in _CLOSERS}
    pairs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(count * 20 + 100):
        if len(pairs) == count:
            break
        messages = _conversation(rng)
        chosen = messages[-1]["content"]
        if chosen in closers:
            continue
        prompt = messages[:-1]
        key = json.dumps(prompt)
        if key in seen:
            continue
        seen.add(key)
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": _wrong(rng, chosen)})
    if len(pairs) < count:
        raise ValueError(f"cannot make {count} distinct preference pairs")
    return pairs
