"""The knowledge benchmark's retrieval part, and the demo help center it
reads."""

from __future__ import annotations

from models_admin.demo_knowledge import QUESTIONS
from tools import knowledge_bench


def test_bm25_retrieval_reports_recall_and_every_fact_is_in_its_section():
    """Words-alone retrieval over the demo articles gives recall@3 as a
    share, and each question's fact is written in a passage under the
    heading the question expects."""
    passages = knowledge_bench.demo_passages()
    results = knowledge_bench.retrieval_measure(passages, encoder=None, k=3)

    assert set(results) == {"bm25"}
    for key in ("recall@1", "recall@3", "found_answerable", "found_unanswerable"):
        assert 0.0 <= results["bm25"][key] <= 1.0
    missing = [
        question
        for question in QUESTIONS
        if not any(
            p.section == question.heading and question.fact.lower() in p.passage.text.lower()
            for p in passages
        )
    ]
    assert missing == []


def test_facts_match_whole_numbers_and_pounds_written_out():
    """A fact is found however its pounds and dashes are written, and never
    inside a longer number."""
    assert knowledge_bench.fact_in("It costs 40 pounds.", "£40")
    assert knowledge_bench.fact_in("Delivery takes 7 \u2013 14 days", "7-14")
    assert not knowledge_bench.fact_in("Engraving is £60.", "£6")
    assert knowledge_bench.fact_in("Engraving is £6.00.", "£6")
