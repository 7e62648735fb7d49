"""Turn a completed prediction into what Discord accepts: attachments within the upload limits.

An output over the per-file limit, or a set over the per-message limit, is re-encoded as a smaller
JPEG; one that still does not fit, or that was too large to download, becomes a link. Either way
the delivery goes through and a note says what happened.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.images import shrink_to_fit
from bot.wavespeed.client import Download, OutputTooLargeError, WaveSpeedClient
from bot.wavespeed.errors import WaveSpeedError
from bot.wavespeed.models import Prediction

# Discord refuses a request over 25 MiB; keep room for the JSON part of the multipart body.
MESSAGE_LIMIT = 25 * 1024 * 1024 - 256 * 1024
DEFAULT_FILE_LIMIT = 10 * 1024 * 1024
# The most the bot downloads for one output; larger ones are posted as links.
DOWNLOAD_CAP = 64 * 1024 * 1024


@dataclass(frozen=True)
class OutputFile:
    index: int
    filename: str
    data: bytes
    spoiler: bool


@dataclass(frozen=True)
class OutputLink:
    index: int
    url: str
    spoiler: bool


@dataclass
class PreparedOutputs:
    files: list[OutputFile] = field(default_factory=list)
    links: list[OutputLink] = field(default_factory=list)
    reencoded: list[int] = field(default_factory=list)  # 1-based image numbers
    flags: list[bool] = field(default_factory=list)
    withheld: list[int] = field(default_factory=list)  # 1-based numbers not posted (server policy)
    shown_plainly: bool = False  # flagged outputs posted without a spoiler (age-restricted channel)

    @property
    def flagged_count(self) -> int:
        return sum(self.flags)

    def without_files(self, urls: list[str]) -> PreparedOutputs:
        """The same outputs as links only: the last resort when Discord refuses an upload."""
        links = [OutputLink(i, urls[i], self.flags[i]) for i in range(len(urls))]
        links = [link for link in links if link.index + 1 not in self.withheld]
        return PreparedOutputs(files=[], links=links, flags=self.flags, withheld=self.withheld)


async def prepare_outputs(
    client: WaveSpeedClient, prediction: Prediction, *, file_limit: int = DEFAULT_FILE_LIMIT
) -> PreparedOutputs:
    urls = prediction.output_urls
    flags = prediction.nsfw_flags()
    results = await asyncio.gather(
        *(client.download(url, max_bytes=DOWNLOAD_CAP) for url in urls), return_exceptions=True
    )
    prepared = PreparedOutputs(flags=flags)
    downloads: list[tuple[int, Download]] = []
    for index, result in enumerate(results):
        if isinstance(result, OutputTooLargeError):
            prepared.links.append(OutputLink(index, urls[index], flags[index]))
        elif isinstance(result, WaveSpeedError):
            result.prediction_id = prediction.id
            raise result
        elif isinstance(result, BaseException):
            raise result
        else:
            downloads.append((index, result))
    if not downloads:
        return prepared
    # Give every file an equal share of the message limit, capped by the per-file limit.
    target = min(file_limit, MESSAGE_LIMIT // len(downloads))
    for index, download in downloads:
        data, extension = download.data, download.extension
        if len(data) > target:
            shrunk = await asyncio.to_thread(shrink_to_fit, data, target)
            if shrunk is None:
                prepared.links.append(OutputLink(index, download.url, flags[index]))
                continue
            data, extension = shrunk, "jpeg"
            prepared.reencoded.append(index + 1)
        name = f"imagine_{prediction.id[:12]}_{index + 1}.{extension}"
        prepared.files.append(OutputFile(index, name, data, flags[index]))
    prepared.links.sort(key=lambda link: link.index)
    return prepared
