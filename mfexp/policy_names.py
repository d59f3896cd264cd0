"""Three-word policy names (adjective-adjective-animal) from the sha256 of a policy's canonical form."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

# 256 adjectives and 256 animals, a fixed selection from the `coolname` word lists
# (BSD-2-Clause, (c) 2015 Alexander Lukanin), embedded so that a name never depends on the
# version of an installed package.
_ADJECTIVES = """
abiding abstract accurate acrid adamant adept adorable affable airborne aloof ambitious
amiable amphibian analytic angelic antique arboreal armored arrogant astute attentive
augmented automatic axiomatic beautiful berserk bizarre bold brainy brawny brilliant bulky
busy capable careful cautious certain cherubic chubby classy cocky comical complex
conscious cordial crazy cryptic cuddly curious curvy daffy dainty dangerous dark dazzling
defiant delicate devious dexterous diligent divergent durable eager eccentric ecstatic
efficient elated elegant elite eminent enchanted enigmatic essential evasive expensive
exuberant fair famous fantastic favorite feathered festive fierce fine flashy flawless
fluffy foamy fractal free friendly funky furious fuzzy gainful generous gifted glaring
gleeful glossy gorgeous gracious greedy groovy hairy handsome hasty heavenly helpful hidden
holistic honorable hopeful horned humorous hypnotic imaginary impartial imperious important
imposing innocent inventive jolly judicious jumping keen kind laughing legendary light
literate logical loud lovely lucky luminous lurking lyrical magnetic marbled masterful
meaty mellow memorable merry meteoric mindful modern mottled musical native naughty
nebulous nice nimble noble noisy nostalgic obedient observant optimal organic orthodox
overjoyed pastoral perfect piquant poetic polar pompous positive practical precious premium
primitive private prophetic prudent puzzling qualified quick quirky radiant rampant rare
real rebel relaxed resilient rich rigorous robust rough ruddy rustling sassy savvy secret
serious shaggy shiny silent simple singing skinny slim smart smoky snobbish soft solid
spectral spicy spiked spiritual spotted stalwart steady stirring strange strict strong
stylish succinct swinging tactful talkative tangible tentacled tested thick tireless tricky
truthful unbiased unique unselfish uppish urban vagabond valiant vehement vengeful
versatile vigilant visionary vivid wakeful warm watchful whimsical winged witty wondrous
worthy
""".split()
_ANIMALS = """
aardvark aardwolf adder agouti albatross alpaca ammonite angelfish anteater armadillo
avocet axolotl badger bandicoot barracuda bear beetle beluga binturong bird bison boar
bobcat boobook booby bull bullfinch bumblebee bustard buzzard caiman camel capybara caracal
caribou carp catfish centipede chamois cheetah chicken chital cicada clam coati cockatoo
cockle coot cormorant coucal cougar coyote crane crayfish crocodile crow curassow cuscus
degu dingo dinosaur dogfish dolphin dormouse dove dragonfly duck eagle earthworm earwig
elephant ermine fennec ferret firefly flamingo fossa frog fulmar galago gaur gecko gerbil
gibbon giraffe goldfish goose gorilla goshawk grebe grouse guan guppy hamster harrier hawk
heron herring hoatzin honeybee hornet hound hyena ibex ibis impala inchworm jackal jackdaw
jaguar jellyfish jerboa kakapo kangaroo kittiwake kiwi koel kudu leech lemming lemur limpet
lion lizard llama locust loon loris lynx lyrebird macaw mackerel malkoha mamba manatee
mandrill manul markhor marmoset marten mastodon meerkat millipede mole mongoose moose
mosquito mouflon mouse mushroom muskrat mussel narwhal nautilus numbat nuthatch oarfish
ocelot octopus orangutan orca oryx ostrich oxpecker oyster panther parakeet partridge
peacock peccary penguin perch pheasant piculet pillbug platypus polecat porcupine porpoise
prawn pronghorn puffin puma quail quetzal quoll rabbit raptor raven reindeer ringtail robin
rooster saiga sambar sawfish scallop scorpion seagull seal seriema shark sheep shoebill
shrew silkworm skink skua skylark sloth smilodon snail sparrow spider spoonbill squid
stallion starfish starling stoat stork sunfish swallow swift swine tamarin tanuki tapir
tarsier teal termite tiger tody tortoise toucanet trogon tuatara tuna turaco turtle uakari
vicugna viper vulture wallaby wapiti warthog wasp weasel whale wolf wolverine woodlouse
worm wren zebra
""".split()
assert len(set(_ADJECTIVES)) == 256 and len(set(_ANIMALS)) == 256


def _digest(canonical: Mapping) -> bytes:
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).digest()


def policy_name(canonical: Mapping) -> str:
    """Three words (adjective-adjective-animal, 2**24 names) from the canonical form's sha256.

    Depends only on the canonical form, so it is the same in every process and on every machine.
    """
    d = _digest(canonical)
    first = d[0]
    second = (first + 1 + d[1] % 255) % 256  # never repeats the first adjective
    return f"{_ADJECTIVES[first]}-{_ADJECTIVES[second]}-{_ANIMALS[d[2]]}"

