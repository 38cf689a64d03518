"""Building a large raster from a small real one: a VRT that repeats it on a grid.

Used by the memory benchmark and the interruption test to get rasters of any size
without storing them: GDAL reads the repeated source through the VRT on the fly.
"""
from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

import rasterio


def repeat_raster_vrt(source: Path, out: Path, times_x: int, times_y: int) -> Path:
    """Write ``out`` (.vrt): ``source`` repeated ``times_x`` by ``times_y`` times."""
    source = Path(source).resolve()
    with rasterio.open(source) as ds:
        w, h, count, dtype = ds.width, ds.height, ds.count, ds.dtypes[0]
        t, crs = ds.transform, ds.crs.to_wkt()
        colours = [c.name.capitalize() for c in ds.colorinterp]
        nodata = ds.nodata
    gdal_type = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16",
                 "float32": "Float32", "float64": "Float64"}[dtype]
    bands = []
    for b in range(1, count + 1):
        sources = "".join(
            f"<SimpleSource><SourceFilename relativeToVRT=\"0\">{escape(str(source))}"
            f"</SourceFilename><SourceBand>{b}</SourceBand>"
            f"<SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{w}\" ySize=\"{h}\"/>"
            f"<DstRect xOff=\"{i * w}\" yOff=\"{j * h}\" xSize=\"{w}\" ySize=\"{h}\"/>"
            "</SimpleSource>" for j in range(times_y) for i in range(times_x))
        nd = f"<NoDataValue>{nodata}</NoDataValue>" if nodata is not None else ""
        bands.append(f"<VRTRasterBand dataType=\"{gdal_type}\" band=\"{b}\">{nd}"
                     f"<ColorInterp>{colours[b - 1]}</ColorInterp>{sources}</VRTRasterBand>")
    xml = (f"<VRTDataset rasterXSize=\"{w * times_x}\" rasterYSize=\"{h * times_y}\">"
           f"<SRS>{escape(crs)}</SRS><GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}"
           f"</GeoTransform>{''.join(bands)}</VRTDataset>")
    Path(out).write_text(xml)
    return Path(out)
