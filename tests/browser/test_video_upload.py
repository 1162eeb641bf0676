"""A researcher uploads two files in the browser: a real video and a text file named .mp4; the progress bar reaches
100 % and each file's result appears (ingested with a link / refused with its reason)."""
import shutil

import pytest

from datasets.models import SourceVideo
from tests.datasets.ingest_fixtures import media, sample_videos, stored_files  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_uploading_a_good_and_a_bad_file_with_progress(page_for, researcher, media, sample_videos, tmp_path):
    good = tmp_path / "Dividing cells.mp4"
    shutil.copy(sample_videos["hd"], good)
    bad = tmp_path / "not-a-video.mp4"
    bad.write_text("This is a text file with a video's name.\n" * 50)

    page = page_for(researcher)
    page.goto("/videos/upload/")
    assert "Height must be at least 720 pixels." in page.locator("#admission-rules").inner_text()
    page.fill("#id_license", "CC BY 4.0")
    page.set_input_files("#id_file", [str(good), str(bad)])
    entries = page.locator("#file-entries .file-entry")
    assert entries.count() == 2
    assert page.input_value("#f0_title") == "Dividing cells"  # the title defaults to the file name
    assert page.input_value("#f1_title") == "not-a-video"
    assert page.input_value("#f0_license") == "CC BY 4.0"
    page.fill("#f0_views", "42")

    page.click("#upload-button")
    page.wait_for_selector("#upload-results li:nth-child(2)")
    page.wait_for_function("document.getElementById('overall-progress').value === 100")
    assert page.locator("#overall-label").inner_text().startswith("100%")
    assert page.eval_on_selector_all(".file-progress", "bars => bars.map(b => b.value)") == [100, 100]
    # the bars followed XMLHttpRequest upload progress events, one request per file
    assert all(int(n) >= 1 for n in page.eval_on_selector_all(
        "#file-entries .file-entry", "boxes => boxes.map(b => b.dataset.progressEvents || '0')"))

    video = SourceVideo.objects.get()
    ingested = page.locator("#upload-results li.ingested")
    assert "Dividing cells.mp4" in ingested.inner_text() and "admitted" in ingested.inner_text()
    assert ingested.locator("a").inner_text() == f"video #{video.pk} “Dividing cells”"
    assert ingested.locator("a").get_attribute("href").endswith(f"/{video.pk}/")
    refused = page.locator("#upload-results li.refused")
    assert "not-a-video.mp4" in refused.inner_text()
    assert "refused — The file is not a video" in refused.inner_text()
    assert page.locator("#file-entries .file-status").all_inner_texts() == ["ingested", "refused"]

    assert (video.title, video.views, video.license, video.uploaded_by) == ("Dividing cells", 42, "CC BY 4.0",
                                                                            researcher)
    assert stored_files(media) == [video.file.name]
