"""The demo shop's help center: Fernhollow's policy articles as Markdown,
and held-out customer questions, each with the fact its answer needs and
the article section that holds it.

The articles repeat the facts of the demo training set (``SHOP``) and add
policies the set never mentions (price matching, the loyalty club, click
and collect, engraving, trade orders...), so a model can only answer
those from the articles. The questions are worded apart from the
articles; ``knowledge-bench`` measures retrieval and answers with them.
"""

from __future__ import annotations

from dataclasses import dataclass

from models_admin.demo_data import SHOP

DEMO_KNOWLEDGE_NAME = "Fernhollow help center"

_ship = SHOP["shipping"]


def _hours(hours: dict[str, str | None]) -> str:
    week = hours["Monday"]
    saturday = hours["Saturday"]
    return f"Monday to Friday {week}, Saturday {saturday}, closed on Sunday"


ARTICLES: dict[str, str] = {
    "returns.md": f"""# Returns and refunds

## Returning an item

You can return any unused item within {SHOP["return_days"]} days of delivery. Start a
return under "My orders" on {SHOP["website"]}, print the label and drop the parcel at
any {SHOP["carrier"]} point.

## Return postage

The return label is free for orders over £{SHOP["return_label_free_over"]}. For smaller
orders the label costs £{SHOP["return_label_price"]}, taken from your refund.

## When the refund arrives

Once the parcel reaches our warehouse we refund the original payment method within
{SHOP["refund_time"]}. Your bank may take a further two or three days to show it.

## Exchanges

Want a different colour or size? Exchanges are free within {SHOP["return_days"]} days:
choose "Exchange" instead of "Refund" when you start the return and we send the new item
as soon as the old one is scanned by the carrier.

## Items that cannot be returned

Engraved and personalised items, opened candles and gift cards cannot be returned
unless they arrive faulty.
""",
    "delivery.md": f"""# Delivery

## Delivery options and prices

- {_ship["uk_standard"]["name"]}: £{_ship["uk_standard"]["price"]}, {_ship["uk_standard"]["time"]}
- {_ship["uk_express"]["name"]}: £{_ship["uk_express"]["price"]}, {_ship["uk_express"]["time"]}
- {_ship["eu"]["name"]}: £{_ship["eu"]["price"]}, {_ship["eu"]["time"]}
- Rest of the world: £{_ship["world"]["price"]}, {_ship["world"]["time"]}

UK standard delivery is free on orders over £{SHOP["free_shipping_over"]}.

## Dispatch

Orders leave our warehouse within {SHOP["dispatch_time"]}. Our carrier is
{SHOP["carrier"]}; the tracking number starting {SHOP["tracking_prefix"]} arrives by email
when your parcel ships.

## Customs and duties

Parcels to countries outside the UK may be charged import duty and VAT by the
destination country. These charges are paid by the recipient on delivery; we cannot
pay them in advance.

## Lost parcels

If your tracking has not moved for 10 working days, tell us and we send a replacement or
refund you in full, whichever you prefer.

## Damaged on arrival

Report anything that arrives damaged within 48 hours, with a photo of the item and the
box, and we replace it at no cost. You do not need to send the broken item back.
""",
    "click-and-collect.md": f"""# Click and collect

## How it works

Choose "Collect from store" at checkout: it is free, and your order is ready at
{SHOP["store_address"]} within 2 hours during opening hours. We text you when it is
ready.

## Collection time limit

We keep collection orders for 7 days. Bring the text message or your order number; if
someone else collects for you, they need the order number and the name on the order.

## Store opening hours

The store is open {_hours(SHOP["store_hours"])}. It takes {SHOP["store_payment"]}.
""",
    "payments.md": f"""# Payment and pricing

## Ways to pay

We accept {", ".join(SHOP["payment_methods"][:-1])} and {SHOP["payment_methods"][-1]}.
We do not take cheques, bank transfers or cryptocurrency.

## Price match promise

Found the same item cheaper at another UK retailer within 14 days of buying it from us?
Send us a link and we refund the difference. Marketplace sellers and clearance prices
are not included.

## Student discount

Students get 10% off full-price items: verify your student email once under "My
account" and the discount applies at checkout.

## Gift cards

Gift cards come in any amount from £{SHOP["gift_card_min"]} to £{SHOP["gift_card_max"]}
and are valid for {SHOP["gift_card_valid_months"]} months. They cannot be exchanged for
cash.
""",
    "fern-club.md": """# Fern Club loyalty scheme

## Joining

Fern Club is free: tick "Join Fern Club" when you create an account.

## Earning and spending points

You earn 1 point for every £1 you spend, online or in store. Every 100 points turn into
a £5 voucher, sent by email. Points expire after 18 months without a purchase.

## Birthday treat

Members get a £5 birthday voucher in their birthday month, valid for 30 days.
""",
    "gifts-and-engraving.md": """# Gifts and personalisation

## Gift wrapping

Gift wrapping costs £2.50 per item: recycled kraft paper, a linen ribbon and a handwritten
card with your message. Prices are never included in a gift parcel.

## Engraving

Chopping boards, mugs and candle jars can be engraved with up to 30 characters.
Engraving costs £6 and adds 5 working days to dispatch. Engraved items cannot be
returned unless they are faulty.
""",
    "orders.md": f"""# Your order

## Cancelling an order

You can cancel an order under "My orders" until it is dispatched. Once it has shipped it
cannot be cancelled, but you can return it within {SHOP["return_days"]} days.

## Changing the delivery address

Addresses can be changed until the order is dispatched: reply to your order confirmation
email with the new address.

## Order numbers

Order numbers start with {SHOP["order_prefix"]} followed by {SHOP["order_digits"]}
digits, for example {SHOP["order_prefix"]}204518.

## Out of stock and preorders

Sold-out items have a "Notify me" button that emails you when they are back. Preorders
are charged when you order and ship within 6 weeks.
""",
    "trade.md": """# Trade and bulk orders

## Discounts for businesses

Cafes, hotels and offices ordering 50 or more of one item get 15% off. Email
trade@fernhollow.example with the items and quantities for a quote within one working
day.

## Invoices

Trade customers can pay by invoice with 30-day terms after their first order.
""",
    "care-and-warranty.md": f"""# Product care and warranty

## Warranty

Everything we sell has a {SHOP["warranty_years"]}-year warranty against manufacturing
faults. To claim, send your order number and a photo of the fault to {SHOP["email"]}.

## Candles

Our soy wax candles are hand-poured in Bristol. The large candle burns for about 45
hours; trim the wick to 5 mm before each lighting and never leave it unattended.

## Wooden boards

Hand wash walnut boards only and rub in a little food-safe oil once a month; never put
them in the dishwasher.

## Stoneware

Stoneware mugs and plates are dishwasher and microwave safe; avoid sudden changes from
very hot to very cold.
""",
    "contact-and-privacy.md": f"""# Contact us

## Customer service hours

Our team answers chat, email and phone {_hours(SHOP["service_hours"])}. Call us on
{SHOP["phone"]} or email {SHOP["email"]}.

## Your data

We keep order records for 6 years because tax law requires it. To close your account
and delete your personal data, email privacy@fernhollow.example; we confirm within 30
days. We never sell your data.
""",
}


@dataclass(frozen=True)
class Question:
    text: str
    fact: str  # what a right answer contains (case-insensitive)
    heading: str  # the section that holds it (its last heading)


QUESTIONS: tuple[Question, ...] = (
    Question("How long do I have to send something back?", "30 days", "Returning an item"),
    Question("Is the return label free?", "£40", "Return postage"),
    Question("what does a return label cost on a small order", "3.95", "Return postage"),
    Question("When will I see my money after returning a mug?", "5 working days",
             "When the refund arrives"),
    Question("Can I swap my cushion cover for another colour?", "free", "Exchanges"),
    Question("Can I return an engraved chopping board?", "faulty",
             "Items that cannot be returned"),
    Question("I lit a candle and don't like the smell, can I send it back?", "opened",
             "Items that cannot be returned"),
    Question("How much is express shipping?", "7.95", "Delivery options and prices"),
    Question("what do you charge to post to Germany", "9.95", "Delivery options and prices"),
    Question("How long does delivery to Australia take?", "7-14",
             "Delivery options and prices"),
    Question("When is UK delivery free?", "£60", "Delivery options and prices"),
    Question("How quickly do orders leave the warehouse?", "1-2 working days", "Dispatch"),
    Question("Which courier delivers your parcels?", "Heron Parcels", "Dispatch"),
    Question("Will I have to pay import tax in Canada?", "recipient", "Customs and duties"),
    Question("Can you prepay the VAT for my parcel to Switzerland?", "cannot",
             "Customs and duties"),
    Question("My tracking hasn't updated in two weeks, what now?", "10 working days",
             "Lost parcels"),
    Question("My vase arrived smashed. What should I do?", "48 hours", "Damaged on arrival"),
    Question("Do I need to post the broken plate back to you?", "do not need",
             "Damaged on arrival"),
    Question("Can I pick up my order in Bristol?", "2 hours", "How it works"),
    Question("Is click and collect free?", "free", "How it works"),
    Question("How many days will you hold my collection order?", "7 days",
             "Collection time limit"),
    Question("Can my husband collect my order for me?", "order number",
             "Collection time limit"),
    Question("What time does the shop open on Saturday?", "10:00", "Store opening hours"),
    Question("Do you take American Express?", "American Express", "Ways to pay"),
    Question("Can I pay with bitcoin?", "cryptocurrency", "Ways to pay"),
    Question("I saw this teapot cheaper at another store, will you match it?", "14 days",
             "Price match promise"),
    Question("Does price matching include Amazon marketplace sellers?", "Marketplace",
             "Price match promise"),
    Question("Is there a discount for students?", "10%", "Student discount"),
    Question("What's the biggest gift card I can buy?", "200", "Gift cards"),
    Question("How long is a gift voucher valid?", "24 months", "Gift cards"),
    Question("How do loyalty points work?", "1 point", "Earning and spending points"),
    Question("How many points do I need for a voucher?", "100 points",
             "Earning and spending points"),
    Question("Do my reward points ever run out?", "18 months",
             "Earning and spending points"),
    Question("Is it free to join the rewards club?", "free", "Joining"),
    Question("Do members get something on their birthday?", "£5", "Birthday treat"),
    Question("Can you gift wrap my order?", "2.50", "Gift wrapping"),
    Question("Will the receipt be in the gift parcel?", "never", "Gift wrapping"),
    Question("Can you put a name on a mug?", "30 characters", "Engraving"),
    Question("How much does personalisation cost?", "£6", "Engraving"),
    Question("Does engraving slow down my order?", "5 working days", "Engraving"),
    Question("Can I still cancel after my order has shipped?", "cannot",
             "Cancelling an order"),
    Question("I typed the wrong street, can I fix the delivery address?", "confirmation",
             "Changing the delivery address"),
    Question("What does an order number look like?", "FH-", "Order numbers"),
    Question("The linen throw is sold out. Will it come back?", "Notify me",
             "Out of stock and preorders"),
    Question("When do preorders ship?", "6 weeks", "Out of stock and preorders"),
    Question("We run a cafe and need 80 mugs, is there a discount?", "15%",
             "Discounts for businesses"),
    Question("Who do I contact about a hotel order?", "trade@fernhollow.example",
             "Discounts for businesses"),
    Question("Can my company pay on invoice?", "30-day", "Invoices"),
    Question("How long is the guarantee on your products?", "2-year", "Warranty"),
    Question("How do I claim for a faulty kettle?", "photo", "Warranty"),
    Question("How many hours does the big candle last?", "45", "Candles"),
    Question("Where are your candles made?", "Bristol", "Candles"),
    Question("Can the walnut board go in the dishwasher?", "never", "Wooden boards"),
    Question("Is the stoneware microwave safe?", "microwave", "Stoneware"),
    Question("What number can I ring you on?", "0117 496 0732", "Customer service hours"),
    Question("Are you open on Sundays for phone support?", "closed",
             "Customer service hours"),
    Question("How do I delete my account and data?", "privacy@fernhollow.example",
             "Your data"),
    Question("Why do you keep my order history?", "6 years", "Your data"),
    Question("Do you sell my personal information?", "never", "Your data"),
)  # fmt: skip

#: Questions the help center has no answer to: a search should find nothing.
UNANSWERABLE: tuple[str, ...] = (
    "Do you sell garden furniture?",
    "What's the weather like in Bristol today?",
    "Can you recommend a good film?",
    "Do you ship by drone to the moon?",
    "Who won the football last night?",
    "What is the capital of Peru?",
    "Can I bring my dog to the office party?",
    "How do I fix my car's brakes?",
    "Write me a poem about the sea.",
    "What's your CEO's salary?",
)


def demo_articles() -> dict[str, bytes]:
    """The articles as files: name -> Markdown bytes."""
    return {name: text.encode("utf-8") for name, text in ARTICLES.items()}
