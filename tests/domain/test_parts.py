from broker.domain.parts import (
    CHUNK_SIZE,
    CHUNKS_PER_PART,
    MAX_PARTS,
    payload_size,
    plain_part_size,
    plan_parts,
)

MIB = 1024 * 1024


def test_an_empty_file_is_one_part_of_nonce_and_one_empty_chunk():
    (part,) = plan_parts(0)
    assert part.is_last and part.plain_size == 0
    assert part.cipher_size == 16 + 16 == payload_size(0)


def test_parts_are_whole_chunks_and_add_up_to_the_payload():
    size = 3 * 64 * MIB + 12345
    parts = plan_parts(size)
    assert [p.number for p in parts] == [1, 2, 3, 4]
    assert all(p.plain_size % CHUNK_SIZE == 0 for p in parts[:-1])
    assert sum(p.cipher_size for p in parts) == payload_size(size)
    assert parts[1].first_chunk == CHUNKS_PER_PART
    assert [p.is_last for p in parts] == [False, False, False, True]


def test_a_file_ending_on_a_chunk_boundary_has_no_extra_empty_chunk():
    assert payload_size(CHUNK_SIZE) == 16 + CHUNK_SIZE + 16
    assert payload_size(2 * CHUNK_SIZE) == 16 + 2 * CHUNK_SIZE + 32


def test_huge_files_get_bigger_parts_to_stay_under_the_s3_part_limit():
    size = 2 * 1024**4  # 2 TiB
    assert len(plan_parts(size)) <= MAX_PARTS
    assert plain_part_size(size) % CHUNK_SIZE == 0
    assert plain_part_size(5 * 1024**3) == 64 * MIB
