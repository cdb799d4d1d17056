"""The checks of the travel example's ledger (tests/support/travel.py), which the e2e test and
the chaos run rely on: a right ledger passes, and each kind of wrong one is named."""

from __future__ import annotations

from dataclasses import replace

from tests.support.travel import CHILD, Row, Trip, child_of, ledger_problems, trip_rows

TRIP_ID = "00000000-0000-0000-0000-000000000001"
FAILS_AT_A_SEAT = Trip("card", fail_at="seats[1]/assign_seat", passengers=2)


def _rows(*steps: tuple[str, str, str]) -> list[Row]:
    return [Row(i, step, action, ref) for i, (step, action, ref) in enumerate(steps, start=1)]


def _compensated_right() -> list[Row]:
    """What the trip that fails at the second seat leaves when everything goes right."""
    return _rows(
        ("book_car", "book_car", "CR-T"),
        ("book_flight", "book_flight", "FL-T"),
        ("book_hotel", "book_hotel", "HT-T"),
        (f"{CHILD}/authorize", "authorize", "AU-T"),
        (f"{CHILD}/capture", "capture", "CP-T"),
        ("seats[0]/assign_seat", "assign_seat", "FL-T/1"),
        ("seats[0]/assign_seat", "free_seat", "FL-T/1"),
        (f"{CHILD}/capture", "refund", "CP-T"),
        (f"{CHILD}/authorize", "void", "AU-T"),
        ("book_flight", "cancel_flight", "FL-T"),
        ("book_hotel", "cancel_hotel", "HT-T"),
        ("book_car", "cancel_car", "CR-T"),
    )


def test_a_trip_knows_which_steps_succeed_before_and_beside_its_failure() -> None:
    assert Trip("invoice").effects() == {
        "book_flight",
        "book_hotel",
        "book_car",
        "send_invoice",
        "seats[0]/assign_seat",
        "seats[1]/assign_seat",
        "seats[2]/assign_seat",
    }
    assert Trip("card", fail_at="book_car").effects() == {"book_flight", "book_hotel"}
    assert Trip("card", fail_at="capture").effects() == {
        "book_flight",
        "book_hotel",
        "book_car",
        f"{CHILD}/authorize",
    }
    assert "seats[0]/assign_seat" in FAILS_AT_A_SEAT.effects()
    assert "seats[1]/assign_seat" not in FAILS_AT_A_SEAT.effects()


def test_a_right_ledger_has_no_problem() -> None:
    rows = _compensated_right()

    assert {row.step for row in rows if not row.undoes} == FAILS_AT_A_SEAT.effects()
    assert ledger_problems("compensated", rows, FAILS_AT_A_SEAT.paths()) == []


def test_each_wrong_ledger_is_named() -> None:
    right = _compensated_right()
    paths = FAILS_AT_A_SEAT.paths()
    twice = [*right, Row(99, "book_car", "cancel_car", "CR-T")]
    refund, void = right[7], right[8]
    swapped = [*right[:7], replace(refund, id=void.id), replace(void, id=refund.id), *right[9:]]
    wrong_ref = [*right[:-1], Row(12, "book_car", "cancel_car", "CR-X")]
    left = right[:-1]  # the car is never cancelled
    ghost = [*right, Row(99, "seats[1]/assign_seat", "free_seat", "FL-T/2")]

    assert ledger_problems("compensated", twice, paths) == [
        "applied more than once: {('book_car', 'cancel_car'): 2}"
    ]
    assert ledger_problems("compensated", swapped, paths) == [
        f"undone out of order along {path}" for path in paths
    ]
    assert ledger_problems("compensated", wrong_ref, paths) == [
        "book_car (CR-T) undone by cancel_car (CR-X)"
    ]
    assert ledger_problems("compensated", left, paths) == ["compensated, yet left ['book_car']"]
    assert ledger_problems("compensated", ghost, paths) == [
        "free_seat undid seats[1]/assign_seat, which never happened"
    ]
    assert ledger_problems("completed", right, paths) != []


def test_a_step_that_succeeded_late_is_undone_when_its_success_came() -> None:
    """Its last attempt timed out, the trip was undone without it, then its success came and
    it was undone last: out of order for the paths through it, as documented, and only it."""
    right = _compensated_right()
    seat_done, seat_undone = right[5], right[6]
    late_undo = replace(seat_undone, id=99)
    undone_last = [*right[:5], replace(seat_done, id=98), *right[7:], late_undo]
    paths = FAILS_AT_A_SEAT.paths()
    seat = "seats[0]/assign_seat"
    through_seat = [path for path in paths if seat in path]

    assert ledger_problems("compensated", undone_last, paths) == [
        f"undone out of order along {path}" for path in through_seat
    ]
    assert ledger_problems("compensated", undone_last, paths, frozenset({seat})) == []
    # Late or not, a step left done, or the others out of order, are still named.
    assert ledger_problems("compensated", undone_last[:-1], paths, frozenset({seat})) == [
        f"compensated, yet left ['{seat}']"
    ]
    refund, void = right[7], right[8]
    swapped = [*right[:7], replace(refund, id=void.id), replace(void, id=refund.id), *right[9:]]
    assert ledger_problems("compensated", swapped, paths, frozenset({seat})) == [
        f"undone out of order along {path}" for path in paths
    ]


def test_the_rows_of_a_trips_child_are_named_under_its_node() -> None:
    child = child_of(TRIP_ID)
    rows = [
        (2, child, "authorize", "authorize", "AU-T"),
        (1, TRIP_ID, "book_car", "book_car", "CR-T"),
        (3, "someone else", "book_car", "book_car", "CR-Z"),
    ]

    assert trip_rows(TRIP_ID, rows) == [
        Row(1, "book_car", "book_car", "CR-T"),
        Row(2, f"{CHILD}/authorize", "authorize", "AU-T"),
    ]
