"""Answers grounded in a knowledge base: in the chat (opt-in per
conversation), the widget (its site's base) and the API (a parameter or
the key's base). The prompt holds the passages within the token budget;
the worker is told which numbers may be cited; a question with nothing
relevant gets the base's reply and no generation."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from django.core.exceptions import ValidationError

from chat.models import Conversation, Message
from chat.services.answers import message_regenerate
from chat.services.conversations import conversation_create, conversation_update
from chat.services.knowledge import grounding_for, knowledge_json
from chat.services.messages import message_generation_finish, message_send
from chat.services.widget import widget_message_send
from chat.services.widget_identity import visitor_start
from chat.services.widget_sites import widget_site_save
from inference.citations import CitationFilter
from inference.worker.wiring import output_filter
from models_admin.selectors.knowledge import knowledge_cache_clear
from models_admin.services.knowledge import (
    knowledge_base_create,
    knowledge_file_add,
    knowledge_index_build,
)
from tests.factories import UserFactory
from tests.models_admin.knowledge_files import SHOP_DOCS

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _words_alone(settings):
    settings.KNOWLEDGE_EMBEDDING_DIR = ""
    knowledge_cache_clear()


@pytest.fixture
def base():
    base = knowledge_base_create(name="Shop help", in_chat=True)
    for name, data in SHOP_DOCS.items():
        knowledge_file_add(base=base, filename=name, data=data, queue=False)
    knowledge_index_build(base_id=base.pk)
    return base


def _send(user, conversation, content):
    return message_send(user=user, conversation=conversation, content=content,
                        client_id=uuid.uuid4())  # fmt: skip


def test_a_grounded_question_sends_the_passages_and_the_numbers_it_may_cite(
    base, queued, django_capture_on_commit_callbacks
):
    user = UserFactory()
    conversation = conversation_create(user=user, system_prompt="Be brief.")
    conversation_update(conversation=conversation, knowledge_base=base.pk)
    with django_capture_on_commit_callbacks(execute=True):
        sent = _send(user, conversation, "How long does the large candle burn?")
    [payload] = queued()
    system = payload["messages"][0]
    assert system["role"] == "system"
    # The passages, numbered, then what to do with them.
    assert system["content"].startswith(
        "Be brief.\n\n[1] Candle care › Burn time\nThe large soy candle burns for about 45 hours."
        "\n\n[2] "
    )
    assert system["content"].endswith("say that you do not know.")
    assert payload["citations"] == len(sent.answer.knowledge["passages"])
    # The stored question is the person's words, not the passages.
    assert payload["messages"][-1] == {
        "role": "user",
        "content": "How long does the large candle burn?",
    }
    card = sent.answer.knowledge["passages"][0]
    assert (card["n"], card["title"], card["heading"]) == (
        1,
        "Candle care",
        "Candle care › Burn time",
    )
    assert sent.answer.knowledge["found"] and sent.answer.knowledge["name"] == "Shop help"


def test_a_question_with_nothing_relevant_gets_the_base_s_reply_and_no_generation(
    base, queued, django_capture_on_commit_callbacks
):
    user = UserFactory()
    conversation = conversation_create(user=user, knowledge_base=base.pk)
    with django_capture_on_commit_callbacks(execute=True):
        sent = _send(user, conversation, "What is the capital of Peru?")
    assert queued() == []
    answer = sent.answer
    assert (answer.status, answer.finish_reason) == ("done", "no_passages")
    assert answer.content == base.nothing_found
    assert answer.knowledge["found"] is False
    # Regenerating it says the same, still without a generation.
    with django_capture_on_commit_callbacks(execute=True):
        again = message_regenerate(user=user, conversation=conversation, message=answer,
                                   client_id=uuid.uuid4())  # fmt: skip
    assert again.answer.finish_reason == "no_passages" and queued() == []


def test_the_finished_answer_keeps_the_numbers_it_cites(base, django_capture_on_commit_callbacks):
    user = UserFactory()
    conversation = conversation_create(user=user, knowledge_base=base.pk)
    with django_capture_on_commit_callbacks(execute=True):
        sent = _send(user, conversation, "What does shipping cost?")
    given = len(sent.answer.knowledge["passages"])
    text = "Standard shipping is 3.95 [1], free over 60 [1][2]."
    answer = message_generation_finish(
        generation_id=sent.answer.generation_id, final={"finish_reason": "stop"}, text=text
    )
    assert answer.knowledge["cited"] == [n for n in (1, 2) if n <= given]


def test_the_worker_s_output_filter_removes_numbers_that_were_not_given():
    cleaner = output_filter({"surface": "chat", "citations": 2})
    assert isinstance(cleaner, CitationFilter)
    text = cleaner.push("Free over 60 [1][7]. Yes [").text + cleaner.push("2].").text
    assert text + cleaner.finish().text == "Free over 60 [1]. Yes [2]."
    assert not isinstance(output_filter({"surface": "chat"}), CitationFilter)


def test_the_passages_fit_the_token_budget(base, settings):
    question = "refund card days shipping costs candle wick burn hours returned"
    settings.KNOWLEDGE_PROMPT_TOKENS = 10_000
    whole = grounding_for(base=base, question=question, version=None)
    assert len(whole.passages) == len(whole.retrieval.passages) == 4
    settings.KNOWLEDGE_PROMPT_TOKENS = 110
    grounding = grounding_for(base=base, question=question, version=None)
    assert grounding.found and 1 <= len(grounding.passages) < 4
    # Estimated at 3.5 characters a token without the model's tokenizer.
    assert len(grounding.system_text()) / 3.5 <= 110 + 1


def test_only_bases_open_to_members_can_be_attached(base):
    closed = knowledge_base_create(name="Staff notes")
    conversation = conversation_create(user=UserFactory())
    with pytest.raises(ValidationError, match="knowledge bases offered"):
        conversation_update(conversation=conversation, knowledge_base=closed.pk)
    conversation_update(conversation=conversation, knowledge_base=base.pk)
    conversation_update(conversation=conversation, knowledge_base=None)
    assert conversation.knowledge_base is None


def test_a_widget_site_s_base_grounds_its_visitors_answers(
    base, queued, django_capture_on_commit_callbacks
):
    site = widget_site_save(data={"name": "Shop", "allowed_origins": "https://shop.example"})
    site.knowledge_base = base
    site.save(update_fields=["knowledge_base"])
    visitor = visitor_start(site=site, token=None)
    with django_capture_on_commit_callbacks(execute=True):
        sent = widget_message_send(visitor=visitor, content="Do you deliver to Norway?",
                                   client_id=uuid.uuid4())  # fmt: skip
    [payload] = queued()
    assert payload["citations"] >= 1 and payload["surface"] == "widget"
    assert "Shipping › Countries" in payload["messages"][0]["content"]
    assert sent.answer.knowledge["passages"][0]["heading"] == "Shipping › Countries"
    conversation = Conversation.objects.get(visitor=visitor)
    assert conversation.knowledge_base is None  # the site's base applies, whatever it is now


def test_the_api_says_which_sources_an_answer_was_given_and_cites():
    knowledge = {
        "name": "Shop help",
        "found": True,
        "passages": [
            {"n": 1, "title": "Returns", "url": "", "heading": "Returns", "excerpt": "30 days"},
            {"n": 2, "title": "Costs", "url": "https://x.example", "heading": "C", "excerpt": "."},
        ],
    }
    shown = knowledge_json(knowledge, "Thirty days [2].")
    assert shown["base"] == "Shop help" and shown["found"]
    assert [(s["n"], s["cited"]) for s in shown["sources"]] == [(1, False), (2, True)]


@pytest.mark.django_db(transaction=True)
def test_api_calls_name_a_base_or_use_their_key_s(base, client, tiny_model_dir):
    from chat.services.api_keys import api_key_create
    from models_admin.services import model_version_create, model_version_promote

    model_version_promote(version=model_version_create(name="tiny", folder=tiny_model_dir))
    key, raw = api_key_create(user=UserFactory(), name="kb")
    ask = {"model": "tiny", "messages": [{"role": "user", "content": "Capital of Peru?"}]}

    def post(body):
        return client.post("/v1/chat/completions", data=json.dumps(body),
                           content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {raw}")  # fmt: skip

    refused = post({**ask, "knowledge_base": "No such base"})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "knowledge_base"
    # Answered by the base itself (nothing on the question): no worker needed.
    from unittest import mock

    with mock.patch("chat.views.openai_api.workers_live_count", return_value=1):
        answered = post({**ask, "knowledge_base": "Shop help"})
        assert answered.status_code == 200, answered.content
        body = answered.json()
        assert body["choices"][0]["message"]["content"] == base.nothing_found
        assert body["knowledge"] == {"base": "Shop help", "found": False, "sources": []}
        stream = post({**ask, "knowledge_base": base.pk, "stream": True})

        async def read() -> bytes:
            return b"".join([part async for part in stream.streaming_content])

        chunks = asyncio.run(read()).decode()
        assert base.nothing_found in chunks and chunks.endswith("data: [DONE]\n\n")
    stored = Message.objects.filter(finish_reason="no_passages", conversation__source="api")
    assert stored.count() == 2
    # A base closed to members is still the key's own when staff attach it.
    closed = knowledge_base_create(name="Key only")
    key.knowledge_base = closed
    key.save(update_fields=["knowledge_base"])
    with mock.patch("chat.views.openai_api.workers_live_count", return_value=1):
        assert (
            post({**ask, "knowledge_base": "Key only"}).json()["knowledge"]["base"] == "Key only"
        )
