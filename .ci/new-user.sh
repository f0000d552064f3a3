#!/usr/bin/env bash
# The new-user path, end to end: pack the library to a local feed, create a brand-new console app, add the
# package the way the README says, paste the README's quick start verbatim, run it and check its output.
# Only what a user gets from the package is used: no project references.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
feed="$work/feed"
app="$work/app"

version=$(dotnet msbuild "$root/src/Batching/Batching.csproj" -getProperty:Version | tail -n 1)
echo "== packing Batching and Batching.Ilgpu $version to $feed"
dotnet pack "$root/src/Batching/Batching.csproj" -c Release -o "$feed" -nologo -v q
dotnet pack "$root/src/Batching.Ilgpu/Batching.Ilgpu.csproj" -c Release -o "$feed" -nologo -v q
test -f "$feed/Batching.Ilgpu.$version.nupkg" || { echo "missing Batching.Ilgpu package"; exit 1; }
unzip -p "$feed/Batching.Ilgpu.$version.nupkg" Batching.Ilgpu.nuspec | grep -q '<dependency id="Batching" version="'"$version"'"' \
  || { echo "Batching.Ilgpu must depend on Batching $version"; exit 1; }

# The core package must carry its README, icon, XML docs and symbols, and must not depend on ILGPU.
nupkg="$feed/Batching.$version.nupkg"
test -f "$feed/Batching.$version.snupkg" || { echo "missing symbols package"; exit 1; }
listing=$(unzip -l "$nupkg")
for f in README.md icon.png lib/net10.0/Batching.dll lib/net10.0/Batching.xml; do
  grep -q " $f\$" <<<"$listing" || { echo "package lacks $f"; exit 1; }
done
if unzip -p "$nupkg" Batching.nuspec | grep -qi '<dependency id="ILGPU'; then echo "core package depends on ILGPU"; exit 1; fi

# A stale copy of this version in the global cache would hide the package just built.
rm -rf "${NUGET_PACKAGES:-$HOME/.nuget/packages}/batching/$version" "${NUGET_PACKAGES:-$HOME/.nuget/packages}/batching.ilgpu/$version"

echo "== new console app"
mkdir -p "$app"
cd "$app"
dotnet new console -n QuickStartApp -o . --framework net10.0 >/dev/null
cat > nuget.config <<CFG
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="local" value="$feed" />
  </packageSources>
</configuration>
CFG
dotnet add package Batching --version "$version"
dotnet add package Microsoft.Extensions.DependencyInjection --version 10.0.0

# The first csharp block of the README is the quick start, a complete Program.cs.
awk '/^```csharp$/{f=1;next} /^```$/{if(f){exit}} f' "$root/README.md" > Program.cs
test -s Program.cs || { echo "no csharp block found in README.md"; exit 1; }

echo "== running the quick start"
output=$(dotnet run)
echo "$output"
expected="8, 3, 6"
[ "$(tail -n 1 <<<"$output")" = "$expected" ] || { echo "expected last line '$expected'"; exit 1; }

# The README's GPU block is a fragment (a kernel struct and its registration): compile and run it against the
# packages with the few variables it assumes, on the CPU path here.
echo "== the README's GPU snippet"
gpu="$work/gpu"
mkdir -p "$gpu"
cd "$gpu"
dotnet new console -n GpuSnippet -o . --framework net10.0 >/dev/null
cp "$app/nuget.config" .
dotnet add package Batching.Ilgpu --version "$version" >/dev/null
dotnet add package Microsoft.Extensions.DependencyInjection --version 10.0.0 >/dev/null
awk '/^```csharp$/{n++; if(n==2){f=1; next}} /^```$/{if(f){exit}} f' "$root/README.md" > snippet.cs
test -s snippet.cs || { echo "no GPU csharp block found in README.md"; exit 1; }
{
  echo 'using Batching; using Batching.Ilgpu; using Microsoft.Extensions.DependencyInjection;'
  echo 'var services = new ServiceCollection(); float[] weights = new float[256 * 256 + 256]; float[] x = new float[256];'
  sed -n '/^services\.AddBatching()/,$p' snippet.cs | sed 's/app\.Services\./provider./; s/^var gpu = /var provider = services.BuildServiceProvider(); var gpu = /'
  echo 'Console.WriteLine($"gpu snippet: {y.Length} outputs");'
  sed -n '1,/^services\.AddBatching()/p' snippet.cs | sed '$d'
} > Program.cs
rm snippet.cs
gpu_output=$(dotnet run)
echo "$gpu_output"
[ "$(tail -n 1 <<<"$gpu_output")" = "gpu snippet: 256 outputs" ] || { echo "the GPU snippet did not run"; exit 1; }
echo "new-user path OK"
