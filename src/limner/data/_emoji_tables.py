"""Hand-curated tables for the emoji dataset: what is left out, renamed, called what.

Everything here is keyed by codepoint or by the cleaned concept name, and checked by the
builder (an entry that matches nothing is an error, so a change in the `emoji` package or
the font shows up instead of silently changing the data).
"""

from __future__ import annotations


def _ranges(*spans: tuple[int, int] | int) -> frozenset[int]:
    out: set[int] = set()
    for s in spans:
        if isinstance(s, tuple):
            out.update(range(s[0], s[1] + 1))
        else:
            out.add(s)
    return frozenset(out)


# Emoji versions above this are left out so that the concept list does not change with
# newer fonts (Debian 12's fonts-noto-color-emoji 2.042 draws Emoji 15.0).
MAX_EMOJI_VERSION = 15.0

# Left out as a group: symbols on coloured tiles that differ only by a small glyph, text
# and letter buttons, arrows (they would fight the spatial words of the captions),
# clock faces, zodiac signs, signage tiles, and one offensive gesture.
EXCLUDED_CODEPOINTS = _ranges(
    0x00A9,  # copyright
    0x00AE,  # registered
    0x203C,  # double exclamation mark
    0x2049,  # exclamation question mark
    0x2122,  # trade mark
    0x2139,  # information
    (0x2194, 0x21AA),  # arrows
    0x23CF,  # eject button
    (0x23E9, 0x23EF),  # media buttons
    (0x23F8, 0x23FA),  # media buttons
    0x24C2,  # circled M
    0x25AA,
    0x25AB,
    0x25B6,
    0x25C0,
    (0x25FB, 0x25FE),  # small squares, play buttons
    0x2626,
    0x262A,
    0x262E,
    0x262F,
    0x2638,  # symbols on purple tiles
    0x2640,
    0x2642,  # gender signs
    (0x2648, 0x2653),  # zodiac
    0x267E,  # infinity tile
    0x267F,  # wheelchair symbol tile
    0x269B,  # atom symbol tile
    0x26A7,  # transgender symbol tile
    0x26CE,  # Ophiuchus
    0x271D,
    0x2721,  # symbols on purple tiles
    0x27A1,
    0x2934,
    0x2935,
    0x2B05,
    0x2B06,
    0x2B07,  # arrows
    0x27B0,
    0x27BF,
    0x3030,
    0x303D,
    0x3297,
    0x3299,
    (0x1F170, 0x1F251),  # letter and ideograph buttons
    (0x1F4F3, 0x1F4F6),  # phone status tiles
    (0x1F500, 0x1F506),  # arrow and brightness buttons
    0x1F518,  # radio button
    (0x1F519, 0x1F524),  # word arrows, keycap 10, input buttons
    0x1F52F,
    0x1F530,
    0x1F532,
    0x1F533,
    0x1F53C,
    0x1F53D,
    0x1F549,
    (0x1F550, 0x1F567),  # clock faces
    0x1F595,  # middle finger
    0x1F6AD,
    0x1F6AE,
    0x1F6AF,
    0x1F6B0,
    0x1F6B1,
    0x1F6B3,
    0x1F6B7,
    0x1F51E,  # signs
    (0x1F6B9, 0x1F6BC),
    0x1F6BE,
    (0x1F6C2, 0x1F6C5),  # signage tiles
    0x1F6D0,
    0x1F6D7,  # place of worship, elevator tiles
    0x1F3E7,
    0x1F4B1,
    0x1F4B9,
    0x1F7F0,
    0x1FAAF,  # more tiles
    # names that say "left"/"right": the captions use those words for placement
    0x1F448,
    0x1F449,
    0x1F91B,
    0x1F91C,
    0x1FAF1,
    0x1FAF2,
    0x1FAF7,
    0x1FAF8,
    0x1F5E8,
    # too long to be a clean name
    0x1FAE2,
    0x1FAF0,
)

# Near-duplicates: drawn (almost) like another kept concept, often differing only by a
# qualifier ("small"/"large", "oncoming", "with smiling eyes").  Value: the one kept.
NEAR_DUPLICATES: dict[int, int] = {
    0x1F538: 0x1F536,  # small orange diamond ~ large orange diamond
    0x1F539: 0x1F537,  # small blue diamond ~ large blue diamond
    0x1F53B: 0x1F53A,  # red triangle pointed down ~ pointed up
    0x1F508: 0x1F50A,  # speaker low volume
    0x1F509: 0x1F50A,  # speaker medium volume
    0x1F4E4: 0x1F4E5,  # outbox tray ~ inbox tray
    0x1F4EA: 0x1F4EB,  # closed mailbox with lowered flag
    0x1F4EC: 0x1F4EB,  # open mailbox with raised flag
    0x1F4ED: 0x1F4EB,  # open mailbox with lowered flag
    0x1F4C3: 0x1F4C4,  # page with curl ~ page facing up
    0x1F4C6: 0x1F4C5,  # tear-off calendar ~ calendar
    0x1F4D4: 0x1F4D2,  # notebook with decorative cover ~ ledger
    0x1F50E: 0x1F50D,  # magnifying glass tilted right
    0x1F694: 0x1F693,  # oncoming police car
    0x1F696: 0x1F695,  # oncoming taxi
    0x1F698: 0x1F697,  # oncoming automobile
    0x1F68D: 0x1F68C,  # oncoming bus
    0x1F688: 0x1F686,  # light rail ~ train
    0x1F68A: 0x1F686,  # tram ~ train
    0x1F6A0: 0x1F6A1,  # mountain cableway ~ aerial tramway
    0x1F6EC: 0x1F6EB,  # airplane arrival ~ departure
    0x1F306: 0x1F307,  # cityscape at dusk ~ sunset
    0x1F30D: 0x1F30E,  # globes
    0x1F30F: 0x1F30E,
    0x1F324: 0x26C5,  # sun behind small cloud ~ sun behind cloud
    0x1F325: 0x26C5,  # sun behind large cloud
    0x26C8: 0x1F329,  # cloud with lightning and rain ~ cloud with lightning
    0x2614: 0x2602,  # umbrella with rain drops ~ umbrella
    0x26C4: 0x2603,  # snowman without snow ~ snowman
    0x23F3: 0x231B,  # hourglass not done ~ hourglass done
    0x2665: 0x2764,  # heart suit ~ red heart
    0x1F497: 0x1F493,  # growing heart ~ beating heart
    0x2733: 0x2747,  # eight-spoked asterisk ~ sparkle
    0x2754: 0x2753,  # white question mark (pale grey) ~ red question mark
    0x2755: 0x2757,  # white exclamation mark ~ red exclamation mark
    0x1F603: 0x1F600,  # grinning face with big eyes ~ grinning face
    0x1F604: 0x1F600,  # grinning face with smiling eyes
    0x1F619: 0x1F617,  # kissing face with smiling eyes ~ kissing face
    0x1F61A: 0x1F617,  # kissing face with closed eyes
    0x1F611: 0x1F610,  # expressionless face ~ neutral face
    0x1F615: 0x1FAE4,  # confused face ~ face with diagonal mouth
    0x1F641: 0x2639,  # slightly frowning face ~ frowning face
    0x1F62F: 0x1F62E,  # hushed face ~ face with open mouth
    0x1F623: 0x1F616,  # persevering face ~ confounded face
    0x1F61E: 0x1F614,  # disappointed face ~ pensive face
    0x1F61F: 0x1F627,  # worried face ~ anguished face
    0x1F626: 0x1F627,  # frowning face with open mouth ~ anguished face
    0x1F62B: 0x1F629,  # tired face ~ weary face
    0x1F625: 0x1F613,  # sad but relieved face ~ downcast face with sweat
    0x263A: 0x1F60A,  # smiling face ~ smiling face with smiling eyes
    0x1F979: 0x1F97A,  # face holding back tears ~ pleading face
    0x1F47F: 0x1F608,  # angry face with horns ~ smiling face with horns
    0x1F638: 0x1F63A,  # grinning cat with smiling eyes ~ grinning cat
    0x1F9D2: 0x1F466,  # child ~ boy
    0x1F9D3: 0x1F474,  # older person ~ old man
    0x1FAC3: 0x1F930,  # pregnant man ~ pregnant woman
    0x1FAC4: 0x1F930,  # pregnant person ~ pregnant woman
    0x1F64E: 0x1F64D,  # person pouting ~ person frowning
    0x1F425: 0x1F424,  # front-facing baby chick ~ baby chick
    0x1F3C5: 0x1F947,  # sports medal ~ 1st place medal
    0x1F3C9: 0x1F3C8,  # rugby football ~ american football
    0x1F3D1: 0x1F3D2,  # field hockey ~ ice hockey
    0x1F6B5: 0x1F6B4,  # person mountain biking ~ person biking
    0x1F93D: 0x1F3CA,  # person playing water polo ~ person swimming
    0x1F4F2: 0x1F4F1,  # mobile phone with arrow ~ mobile phone
    0x1F4F8: 0x1F4F7,  # camera with flash ~ camera
    0x1F4E8: 0x2709,  # incoming envelope ~ envelope
    0x1F4E9: 0x2709,  # envelope with arrow ~ envelope
}

# Clean names where the `emoji` package's name is unclear, has a qualifier left from a
# removed near-duplicate, or names a sport where the picture is of the gear.
RENAMES: dict[int, str] = {
    0x231B: "hourglass",
    0x2712: "pen nib",
    0x2795: "plus sign",
    0x2796: "minus sign",
    0x2797: "division sign",
    0x2716: "multiplication sign",
    0x2B1B: "black square",
    0x2B1C: "white square",
    0x1F004: "mahjong tile",
    0x1F0CF: "joker card",
    0x1F30E: "globe showing the Americas",
    0x1F3B3: "bowling pins",
    0x1F3BE: "tennis racket",
    0x1F3CF: "cricket bat",
    0x1F3D2: "ice hockey stick",
    0x1F3D3: "ping pong paddle",
    0x1F3F8: "badminton racket",
    0x1F94D: "lacrosse stick",
    0x1F4A4: "zzz",
    0x1F4B2: "dollar sign",
    0x1F4D5: "red book",
    0x1F4EB: "mailbox",
    0x1F4C4: "page",
    0x1F301: "foggy bridge",
    0x1F6AB: "prohibited sign",
    0x2622: "radioactive sign",
    0x2623: "biohazard sign",
    0x1F4AB: "dizzy symbol",
    0x1F6DC: "wireless symbol",
    0x1F929: "star-struck face",
    0x1F4A8: "puff of air",
    0x1F3D5: "campsite",
    0x1F373: "frying pan",
    0x1F6A7: "construction barrier",
    0x1F931: "breast-feeding woman",
    0x1F3C7: "racehorse and jockey",
    0x1F512: "padlock",
    0x1F513: "open padlock",
    0x1F50F: "padlock with pen",
    0x1F510: "padlock with key",
    0x1F50A: "speaker",
    0x1F50D: "magnifying glass",
    0x1F536: "orange diamond",
    0x1F537: "blue diamond",
    0x1F53A: "red triangle",
    0x1F5EF: "anger bubble",
    0x1F645: "person gesturing no",
    0x1F646: "person gesturing ok",
    0x1F44C: "ok hand",
    0x1F947: "gold medal",
    0x1F948: "silver medal",
    0x1F949: "bronze medal",
    0x1F471: "blond person",
    0x1F9D4: "bearded person",
    0x1F6EB: "airplane taking off",
    0x1F3F4: "black flag",
    0x1F6A5: "horizontal traffic light",
}

# Phrases that take no article: plurals without a final "s", mass nouns, proper names.
NO_ARTICLE: frozenset[str] = frozenset(
    line.strip()
    for line in """
    dice
    fire
    popcorn
    spaghetti
    sushi
    bacon
    butter
    bread
    dango
    oden
    sake
    falafel
    fondue
    wood
    firewood
    coral
    salt
    fog
    mist
    haze
    dna
    mate
    yerba mate
    ice
    zzz
    curry
    curry rice
    cooked rice
    high voltage
    thread
    yarn
    green salad
    custard
    cooking
    palms up together
    applause
    music
    sheet music
    cash
    flying money
    mail
    glitter
    sunshine
    pasta
    honey
    milk
    green tea
    red wine
    champagne
    bubbly
    whiskey
    yoga
    meditation
    shopping
    smoking
    boxing
    archery
    bowling
    curling
    lacrosse
    badminton
    tennis
    wrestling
    rowing
    cheers
    hooray
    confetti
    blood
    news
    cutlery
    ginger
    cheese
    sign language
    tempura
    shrimp tempura
    calamari
    rock on
    mind blown
    live long and prosper
    hang loose
    you
    pointing at you
    like
    dislike
    rofl
    laughing sideways
    drool
    paella
    japan
    fuji
    fujiyama
    mount fuji
    saturn
    lady liberty
    dracula
    santa
    Santa Claus
    father christmas
    Mrs. Claus
    mother christmas
    earth
    planet earth
    maize
    corn
    golf
    soccer
    ice hockey
    ping pong
    table tennis
    mahjong
    tea
    coffee
    horse racing
    canned food
    meat on bone
    pouring liquid
    money with wings
    """.strip().splitlines()
)
# Phrases that take "the".
THE_ARTICLE: frozenset[str] = frozenset(
    {"Statue of Liberty", "Tokyo tower", "milky way", "world", "globe showing the Americas"}
)
# Heads of a noun phrase that are plural without ending in "s".
IRREGULAR_PLURALS = frozenset({"people", "men", "women", "children", "dice", "geese", "mice"})
# Words starting with a vowel letter that take "a" ("a unicorn"), and the reverse.
A_BEFORE_VOWEL = ("uni", "one", "use", "eu", "ewe", "ufo", "ukulele", "utensil", "ute")
AN_BEFORE_CONSONANT = ("hour", "honest", "honour", "x-ray", "x ray")


def _parse_synonyms(text: str) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for line in text.strip().splitlines():
        name, _, rest = line.partition(":")
        syns = tuple(s.strip() for s in rest.split(",") if s.strip())
        if name.strip() in out:
            raise ValueError(f"duplicate synonym entry {name!r}")
        out[name.strip()] = syns
    return out


# Hand-written synonyms: "name: synonym, synonym".  The first synonym of some concepts is
# held out of training (see HELDOUT_SYNONYM_FRACTION in emoji.py), so the most natural
# everyday word comes first.
HAND_SYNONYMS = _parse_synonyms(
    """
watch: wristwatch
hourglass: sand timer, sandglass
keyboard: computer keyboard
alarm clock: alarm, wake-up clock
stopwatch: chronometer
sun: sunshine, bright sun
cloud: white cloud
umbrella: brolly
snowman: frosty snowman
comet: falling comet
telephone: landline phone, old phone
skull and crossbones: pirate skull, jolly roger
radioactive sign: radiation sign, nuclear sign
biohazard sign: biological hazard sign
frowning face: sad face, unhappy face
chess pawn: pawn
spade suit: spade, spades symbol
club suit: club, clubs symbol
diamond suit: red diamond, diamonds symbol
hot springs: onsen, steam bath
recycling symbol: recycle sign, recycling arrows
hammer and pick: pick and hammer
anchor: ship anchor, boat anchor
crossed swords: two swords
balance scale: scales, scales of justice
gear: cog, cogwheel
fleur-de-lis: lily emblem
warning: warning sign, caution sign
high voltage: lightning bolt, thunderbolt
white circle: white dot, white disc
black circle: black dot, black disc
coffin: casket
funeral urn: urn
soccer ball: football, futbol
sun behind cloud: partly cloudy, partly sunny
pick: pickaxe, mattock
rescue worker's helmet: rescue helmet
chains: chain
no entry: do not enter sign, no entry sign
church: chapel
mountain: peak, mountain peak
fountain: water fountain
flag in hole: golf flag, golf hole
ferry: ferryboat
sailboat: sailing boat, yacht
skier: person skiing
ice skate: skate, ice skating boot
tent: camping tent
fuel pump: gas pump, petrol pump
scissors: shears, pair of scissors
check mark button: green check box
airplane: plane, aeroplane, jet
envelope: letter, mail envelope
raised fist: fist
raised hand: open palm, high five
victory hand: peace sign, v sign
writing hand: hand writing
pencil: lead pencil
check mark: tick, checkmark
sparkles: glitter, twinkles
snowflake: snow crystal
sparkle: green sparkle
cross mark: red cross mark, red x
red question mark: question mark, question
red exclamation mark: exclamation mark, exclamation point
red heart: love heart, heart
black square: dark square
white square: blank square
star: gold star, yellow star
hollow red circle: red ring, red o
mahjong tile: mahjong dragon tile
joker card: joker
cyclone: hurricane, typhoon
foggy bridge: bridge in fog, misty bridge
night with stars: starry night
sunrise over mountains: mountain sunrise
sunrise: dawn, sunrise over the sea
rainbow: arc of colours
bridge at night: night bridge
water wave: wave, ocean wave
volcano: erupting volcano
milky way: galaxy
globe showing the Americas: earth, planet earth, world
new moon: dark moon
crescent moon: moon, crescent
full moon: bright moon
sun with face: smiling sun
glowing star: shining star
shooting star: falling star
thermometer: temperature gauge
cloud with rain: rain cloud, rainy cloud
cloud with snow: snow cloud
cloud with lightning: storm cloud, thundercloud
tornado: twister, whirlwind
fog: mist, haze
wind face: blowing wind
hot dog: frankfurter, sausage in a bun
taco: mexican taco
burrito: wrap
chestnut: conker
seedling: sprout, young plant
evergreen tree: pine tree, fir tree
deciduous tree: tree, leafy tree
palm tree: coconut tree
cactus: succulent
hot pepper: chili pepper, chilli
tulip: tulip flower
cherry blossom: sakura, pink blossom
rose: red rose
hibiscus: hibiscus flower
sunflower: yellow sunflower
blossom: yellow blossom
ear of corn: corn, maize, corn cob
herb: sprig, green herb
four leaf clover: lucky clover
maple leaf: red leaf
fallen leaf: autumn leaf, dry leaf
mushroom: toadstool, fungus
tomato: red tomato
eggplant: aubergine, brinjal
grapes: bunch of grapes, purple grapes
melon: cantaloupe, honeydew
watermelon: slice of watermelon
tangerine: orange fruit, mandarin
lemon: yellow lemon
banana: yellow banana
pineapple: ananas
red apple: apple
green apple: sour apple
pear: green pear
peach: ripe peach
cherries: cherry, pair of cherries
strawberry: berry, red berry
hamburger: burger, cheeseburger
pizza: slice of pizza, pizza slice
meat on bone: drumstick of meat, meat bone
poultry leg: chicken leg, chicken drumstick
rice ball: onigiri
cooked rice: bowl of rice
curry rice: curry
steaming bowl: ramen, noodle soup
spaghetti: pasta, noodles
bread: loaf, loaf of bread
french fries: fries, chips
roasted sweet potato: sweet potato, yam
sushi: nigiri
fried shrimp: tempura, shrimp tempura
soft ice cream: soft serve, ice cream cone
shaved ice: snow cone
ice cream: sundae, ice cream bowl
doughnut: donut
cookie: biscuit, chocolate chip cookie
chocolate bar: chocolate, candy bar
candy: sweet, wrapped candy
lollipop: lolly, sucker
custard: pudding, flan
honey pot: honey, jar of honey
shortcake: slice of cake, cake slice
bento box: lunch box, bento
pot of food: stew, pot of stew
frying pan: fried egg, skillet
fork and knife: cutlery, knife and fork
teacup without handle: green tea, tea cup
wine glass: glass of wine, red wine
cocktail glass: martini, cocktail
tropical drink: tiki drink
beer mug: beer, pint of beer
clinking beer mugs: cheers, two beers
baby bottle: feeding bottle
bottle with popping cork: champagne, bubbly
popcorn: bucket of popcorn
ribbon: bow, pink bow
wrapped gift: present, gift box, gift
birthday cake: cake with candles
jack-o-lantern: carved pumpkin, halloween pumpkin
Christmas tree: xmas tree, decorated tree
Santa Claus: santa, father christmas
fireworks: firework display
sparkler: sparkling firework
balloon: red balloon
party popper: confetti popper
confetti ball: confetti
Japanese dolls: hina dolls
carp streamer: koinobori, fish kite
backpack: rucksack, school bag
graduation cap: mortarboard, grad cap
military medal: war medal
reminder ribbon: yellow ribbon, awareness ribbon
studio microphone: podcast microphone
film frames: film strip, filmstrip
admission tickets: tickets
carousel horse: merry-go-round horse
ferris wheel: big wheel, observation wheel
roller coaster: rollercoaster
fishing pole: fishing rod
microphone: mic, karaoke microphone
movie camera: film camera, cine camera
headphone: headphones, headset
artist palette: paint palette, palette
top hat: tophat, magician hat
circus tent: big top
ticket: ticket stub
clapper board: clapperboard, film slate
performing arts: theatre masks, drama masks
video game: game controller, gamepad
bullseye: dartboard, target
slot machine: fruit machine, one-armed bandit
pool 8 ball: eight ball, billiard ball
game die: dice, die
bowling pins: bowling
musical note: note, music note
musical notes: music, music notes
saxophone: sax
guitar: electric guitar
musical keyboard: piano, piano keys
trumpet: horn, brass trumpet
violin: fiddle
musical score: sheet music, treble clef
running shirt: tank top, sports vest
tennis racket: racquet, tennis
skis: pair of skis
basketball: hoops ball
chequered flag: checkered flag, racing flag
snowboarder: person snowboarding
person running: runner, jogger
person surfing: surfer
trophy: cup, winner's cup
racehorse and jockey: jockey, horse racing
wireless symbol: wifi symbol, wi-fi sign
dizzy symbol: dizzy star
breast-feeding woman: nursing mother
american football: rugby ball, gridiron ball
person swimming: swimmer
person lifting weights: weightlifter
person golfing: golfer
motorcycle: motorbike
racing car: race car, formula one car
cricket bat: cricket bat and ball
volleyball: beach ball
ice hockey stick: hockey stick
ping pong paddle: table tennis bat, ping pong bat
snow-capped mountain: snowy mountain
campsite: camping site, camp
beach with umbrella: beach, sunny beach
building construction: crane, construction site
houses: neighbourhood, row of houses
cityscape: skyline, city
derelict house: abandoned house, haunted house
classical building: museum, greek temple
desert: sand dunes
desert island: island, tropical island
national park: valley
stadium: arena
house: home
house with garden: cottage, home with garden
office building: skyscraper, office tower
post office: mail office
hospital: clinic
bank: bank building
hotel: inn
love hotel: heart hotel
convenience store: corner shop, shop
school: schoolhouse
department store: shopping mall
factory: mill, industrial plant
red paper lantern: lantern, paper lantern
Japanese castle: pagoda castle
castle: fortress, palace
white flag: surrender flag
black flag: pirate flag
rosette: flower rosette
label: tag, price tag
badminton racket: shuttlecock, badminton
bow and arrow: archery
amphora: vase, urn jug
rat: brown rat
mouse: white mouse
ox: bull
water buffalo: buffalo
cow: dairy cow
tiger: big cat, striped cat
leopard: cheetah, jaguar
rabbit: bunny, hare
cat: kitty, kitten
dragon: green dragon
crocodile: alligator, croc
whale: blue whale
snail: slug, escargot
snake: serpent, python
horse: pony, stallion
ram: male sheep
goat: billy goat
ewe: sheep, lamb
monkey: ape, chimp
rooster: cockerel, cock
chicken: hen
dog: doggy, hound, pooch
pig: piggy, hog, swine
boar: wild boar, wild pig
elephant: jumbo, pachyderm
octopus: kraken
spiral shell: seashell, shell
bug: caterpillar, larva
honeybee: bee, bumblebee
lady beetle: ladybug, ladybird
fish: blue fish
tropical fish: clownfish, reef fish
blowfish: pufferfish, puffer fish
turtle: tortoise
hatching chick: chick in egg
baby chick: chick, yellow chick
bird: bluebird, songbird
penguin: emperor penguin
koala: koala bear
poodle: white poodle
camel: dromedary, one-hump camel
two-hump camel: bactrian camel
dolphin: porpoise
mouse face: mouse head
cow face: cow head
tiger face: tiger head
rabbit face: bunny face, bunny head
cat face: kitty face, cat head
dragon face: dragon head
spouting whale: whale spouting water
horse face: horse head, pony face
monkey face: monkey head
dog face: puppy face, puppy, dog head
pig face: piggy face, pig head
frog: toad
hamster: hamster face, gerbil
wolf: wolf face
bear: bear face, brown bear
panda: panda bear, giant panda
pig nose: snout
paw prints: paw print, pawprints
chipmunk: squirrel
eyes: pair of eyes
eye: eyeball
ear: human ear
nose: human nose
mouth: lips, red lips
tongue: licking tongue
oncoming fist: punch, fist bump
waving hand: hand waving, hello hand
ok hand: okay sign, ok sign
thumbs up: thumb up, like
thumbs down: thumb down, dislike
clapping hands: applause, clap
open hands: jazz hands
crown: king's crown, tiara
woman's hat: sun hat, ladies' hat
glasses: eyeglasses, spectacles
necktie: tie
t-shirt: tee, shirt
jeans: denim trousers, blue jeans
dress: gown, blue dress
kimono: yukata
bikini: swimsuit top and bottom
woman's clothes: blouse
purse: coin purse
handbag: bag, tote bag
clutch bag: pouch
man's shoe: shoe, leather shoe
running shoe: sneaker, trainer
high-heeled shoe: high heel, stiletto
woman's sandal: sandal
woman's boot: boot, cowboy boot
footprints: foot prints
bust in silhouette: silhouette, person silhouette
busts in silhouette: silhouettes
boy: young boy, kid
girl: young girl
man: guy, gentleman
woman: lady
family: parents with child
police officer: policeman, cop
person with veil: bride
construction worker: builder
princess: tiara girl
ogre: oni, red demon
goblin: tengu
ghost: spook, phantom
baby angel: cherub
alien: extraterrestrial, grey alien
alien monster: space invader, pixel monster
skull: human skull
guard: royal guard, guardsman
woman dancing: dancer, flamenco dancer
lipstick: lip gloss
nail polish: nail varnish, manicure
barber pole: barber's pole
syringe: needle, injection
pill: capsule, medicine
kiss mark: lipstick kiss
love letter: valentine
ring: engagement ring, diamond ring
gem stone: gem, diamond, jewel
bouquet: bunch of flowers, flowers
wedding: wedding chapel
broken heart: heartbreak, shattered heart
two hearts: pair of hearts
blue heart: blue love heart
green heart: green love heart
yellow heart: yellow love heart
purple heart: purple love heart
light bulb: lightbulb, bulb, idea
bomb: black bomb
collision: explosion, boom, bang
sweat droplets: water drops, splashes
droplet: water drop, raindrop, drop
puff of air: dashing away, dash
pile of poo: poop, poo, turd
flexed biceps: muscle, bicep, strong arm
speech balloon: speech bubble, talk bubble
thought balloon: thought bubble
hundred points: hundred, score of 100
money bag: sack of money, bag of money
dollar sign: dollar symbol
credit card: bank card, debit card
dollar banknote: dollar bill, cash
money with wings: flying money
seat: airplane seat
laptop: notebook computer
briefcase: attache case
computer disk: minidisc
floppy disk: diskette, save icon
optical disk: compact disc, cd
dvd: gold disc
file folder: folder
open file folder: open folder
page: sheet of paper, document
calendar: date
bar chart: bar graph
chart increasing: rising chart, line graph going up
chart decreasing: falling chart, line graph going down
clipboard: checklist board
pushpin: thumbtack, drawing pin
round pushpin: map pin, location pin
paperclip: paper clip
straight ruler: ruler
triangular ruler: set square
notebook: composition book
red book: closed book
open book: book
books: stack of books, pile of books
scroll: parchment
memo: note and pencil, written note
telephone receiver: phone receiver, handset
pager: beeper
fax machine: fax
satellite antenna: satellite dish, radar dish
loudspeaker: public address speaker
megaphone: bullhorn
package: parcel, box, cardboard box
mailbox: letterbox, post box
postbox: red postbox, mail drop
newspaper: paper, news
mobile phone: smartphone, cell phone, phone
camera: photo camera
video camera: camcorder
television: tv, telly
radio: transistor radio
videocassette: vhs tape, video tape
film projector: movie projector
prayer beads: rosary
muted speaker: mute, silent speaker
speaker: loud speaker icon, sound icon
battery: full battery
electric plug: plug, power plug
magnifying glass: magnifier, search icon
padlock: lock, locked padlock, closed padlock
open padlock: unlocked padlock, open lock
key: door key, golden key
bell: golden bell
bell with slash: silent bell, no bell
bookmark: bookmark ribbon
link: chain link
fire: flame, flames, blaze
flashlight: torch
wrench: spanner
hammer: mallet
nut and bolt: bolt and nut, screw
kitchen knife: knife, chef's knife
water pistol: squirt gun, water gun
microscope: lab microscope
telescope: spyglass
crystal ball: fortune teller ball
red circle: red dot, red disc
blue circle: blue dot, blue disc
orange diamond: orange rhombus
blue diamond: blue rhombus
red triangle: red arrowhead
dove: white dove, peace dove
candle: lit candle, candlelight
mantelpiece clock: mantel clock, table clock
hole: pit
detective: sleuth, private eye
sunglasses: shades, dark glasses
spider: tarantula
spider web: cobweb, web
joystick: arcade stick
man dancing: disco dancer
linked paperclips: two paperclips
pen: ballpoint pen, ballpoint
fountain pen: ink pen
paintbrush: paint brush, brush
crayon: wax crayon
hand with fingers splayed: spread hand, splayed hand
vulcan salute: live long and prosper
black heart: dark heart
desktop computer: computer, pc
printer: inkjet printer
computer mouse: mouse for computer
framed picture: painting, framed painting
file cabinet: filing cabinet
wastebasket: trash can, wastepaper bin, bin
spiral notepad: spiral notebook, notepad
spiral calendar: desk calendar
clamp: vice, c-clamp
old key: antique key, skeleton key
rolled-up newspaper: rolled newspaper
dagger: knife blade, short sword
speaking head: talking head
anger bubble: angry speech bubble
ballot box with ballot: ballot box, voting box
world map: map, map of the world
mount fuji: fuji, fujiyama
Tokyo tower: red tower
Statue of Liberty: lady liberty
map of Japan: japan
moai: easter island head, stone head
grinning face: smiley, happy face, big grin
beaming face with smiling eyes: beaming face, grin
face with tears of joy: laughing face, lol face
grinning face with sweat: nervous grin
grinning squinting face: laughing squinting face
smiling face with halo: angel face, innocent face
smiling face with horns: devil face, purple devil
winking face: wink, winky face
smiling face with smiling eyes: blushing face, blush
face savoring food: yummy face, yum
relieved face: calm face, content face
smiling face with heart-eyes: heart eyes, love-struck face
smiling face with sunglasses: cool face, cool smiley
smirking face: smirk, sly face
neutral face: straight face, blank face
unamused face: annoyed face, unimpressed face
downcast face with sweat: cold sweat face
pensive face: thoughtful face, sad pensive face
confounded face: scrunched face
kissing face: kiss face, pucker face
face blowing a kiss: blowing a kiss, kissy face
face with tongue: tongue out face, cheeky face
winking face with tongue: silly face, winking tongue face
squinting face with tongue: playful face
angry face: mad face, grumpy face
enraged face: furious face, red angry face
crying face: teary face, sad crying face
face with steam from nose: huffing face, triumph face
anguished face: distressed face
fearful face: scared face, afraid face
weary face: exhausted face, fed up face
sleepy face: drowsy face
grimacing face: grimace, awkward face
loudly crying face: sobbing face, bawling face
face with open mouth: surprised face, open mouth face
anxious face with sweat: anxious face, worried sweaty face
face screaming in fear: screaming face, scream
astonished face: shocked face, amazed face
flushed face: embarrassed face, blushing red face
sleeping face: asleep face, snoring face
face with crossed-out eyes: dizzy face, knocked out face
face without mouth: mouthless face, speechless face
face with medical mask: masked face, face mask
grinning cat: happy cat
cat with tears of joy: laughing cat
smiling cat with heart-eyes: cat in love
cat with wry smile: smirking cat
kissing cat: cat kiss
pouting cat: grumpy cat, angry cat
crying cat: sad cat, teary cat
weary cat: screaming cat, shocked cat
slightly smiling face: slight smile, small smile
upside-down face: topsy-turvy face
face with rolling eyes: eye roll, rolling eyes
person gesturing no: crossed arms, no gesture
person gesturing ok: ok gesture
person bowing: bowing person, deep bow
see-no-evil monkey: see no evil, monkey covering eyes
hear-no-evil monkey: hear no evil, monkey covering ears
speak-no-evil monkey: speak no evil, monkey covering mouth
person raising hand: raised hand person
raising hands: hooray, celebration hands
person frowning: frowning person
folded hands: praying hands, prayer, thank you hands
rocket: spaceship, space rocket
helicopter: chopper
locomotive: steam train, steam engine
railway car: train carriage, railcar
high-speed train: fast train, express train
bullet train: shinkansen
train: commuter train
metro: subway, underground train
station: train station, railway station
tram car: streetcar, trolley car
bus: coach, city bus
trolleybus: electric bus
bus stop: bus shelter
minibus: van
ambulance: emergency vehicle
fire engine: fire truck
police car: cop car, patrol car
taxi: cab, yellow cab
automobile: car, red car
sport utility vehicle: suv, blue car
delivery truck: truck, lorry
articulated lorry: semi truck, tractor trailer
tractor: farm tractor
monorail: sky train
mountain railway: cog railway
suspension railway: hanging railway
aerial tramway: cable car, gondola lift
ship: cruise ship, ocean liner
person rowing boat: rower, rowing
speedboat: powerboat
horizontal traffic light: traffic lights
vertical traffic light: stoplight, traffic signal
construction barrier: roadworks barrier, road block
police car light: siren, emergency light
triangular flag: pennant, red flag
door: front door, wooden door
prohibited sign: forbidden sign, no sign
cigarette: smoking, cig
bicycle: bike, cycle, push bike
person biking: cyclist, bike rider
person walking: pedestrian, walker
children crossing: school crossing sign
toilet: loo, lavatory
shower: shower head
person taking bath: bathing person
bathtub: tub, bath
couch and lamp: sofa and lamp, living room
person in bed: sleeping person
shopping bags: shopping
bellhop bell: service bell, reception bell
bed: single bed
stop sign: stop
shopping cart: trolley, shopping trolley
hut: shack, cabin
wheel: wooden wheel, wagon wheel
ring buoy: lifebuoy, life ring
hammer and wrench: tools
shield: blue shield
oil drum: barrel, oil barrel
motorway: highway, freeway
railway track: railroad, train track
motor boat: motorboat
small airplane: light aircraft, propeller plane
airplane taking off: departing plane, takeoff
satellite: space satellite
passenger ship: cruise liner
kick scooter: scooter, push scooter
motor scooter: moped, vespa
canoe: kayak
sled: sledge, toboggan
flying saucer: ufo, spaceship saucer
skateboard: skate board
auto rickshaw: tuk-tuk, tuk tuk
pickup truck: pickup, ute
roller skate: rollerskate, quad skate
orange circle: orange dot, orange disc
yellow circle: yellow dot, yellow disc
green circle: green dot, green disc
purple circle: purple dot, purple disc
brown circle: brown dot, brown disc
red square: red tile, red box
blue square: blue tile, blue box
orange square: orange tile, orange box
yellow square: yellow tile, yellow box
green square: green tile, green box
purple square: purple tile, purple box
brown square: brown tile, brown box
pinched fingers: italian hand gesture
white heart: white love heart
brown heart: brown love heart
pinching hand: tiny amount, pinch
zipper-mouth face: zipped mouth, zipper face
money-mouth face: money face, rich face
face with thermometer: sick face, ill face
nerd face: geek face, nerdy face
thinking face: thinker, hmm face, pondering face
face with head-bandage: injured face, hurt face
robot: robot face, droid
smiling face with open hands: hugging face, hugging smiley
sign of the horns: rock on, metal hand
call me hand: shaka, hang loose
raised back of hand: back of hand
handshake: shaking hands, deal
crossed fingers: fingers crossed, good luck
love-you gesture: i love you hand, ily sign
cowboy hat face: cowboy, cowboy face
clown face: clown
nauseated face: nauseous face, sick green face
rolling on the floor laughing: rofl, laughing sideways
drooling face: drool
lying face: pinocchio face, long nose face
person facepalming: facepalm
sneezing face: sneeze, face with tissue
face with raised eyebrow: skeptical face, raised eyebrow
star-struck face: starry-eyed face, star eyes
zany face: crazy face, goofy face
shushing face: shh face, quiet face
face with symbols on mouth: cursing face, swearing face
face with hand over mouth: giggling face, oops face
face vomiting: vomiting face, puking face
exploding head: mind blown, shocked head
pregnant woman: expecting mother, mum-to-be
palms up together: cupped hands
selfie: selfie arm, taking a selfie
prince: young prince
person in tuxedo: groom, man in tuxedo
Mrs. Claus: mother christmas
person shrugging: shrug, shrugging person
person cartwheeling: gymnast, cartwheel
person juggling: juggler
person fencing: fencer
people wrestling: wrestlers, wrestling
person playing handball: handball player
diving mask: snorkel mask, snorkel
wilted flower: dead flower, drooping rose
drum: snare drum, drum and drumsticks
clinking glasses: champagne toast, toast
tumbler glass: whisky glass, whiskey
spoon: teaspoon
goal net: goal, football goal
gold medal: first place medal, winner's medal
silver medal: second place medal
bronze medal: third place medal
boxing glove: boxing
martial arts uniform: karate uniform, judo uniform
curling stone: curling
lacrosse stick: lacrosse
softball: yellow ball
flying disc: frisbee
croissant: crescent roll
avocado: half avocado
cucumber: pickle, gherkin
bacon: rasher, bacon strips
potato: spud
carrot: orange carrot
baguette bread: baguette, french bread
green salad: salad, bowl of salad
shallow pan of food: paella, pan of food
stuffed flatbread: gyro, kebab, pita wrap
egg: chicken egg, brown egg
glass of milk: milk
peanuts: peanut, groundnut
kiwi fruit: kiwi
pancakes: stack of pancakes, hotcakes
dumpling: gyoza, potsticker
fortune cookie: lucky cookie
takeout box: chinese takeout, noodle box
chopsticks: pair of chopsticks
bowl with spoon: cereal bowl, soup bowl
cup with straw: soda cup, soft drink
coconut: half coconut
broccoli: broccoli floret, green broccoli
pie: apple pie, tart
pretzel: salted pretzel
cut of meat: steak, raw meat
sandwich: sub, sarnie
canned food: tin can, can of soup
leafy green: lettuce, bok choy, cabbage
mango: ripe mango
moon cake: mooncake
bagel: bread ring
smiling face with hearts: loving face, adoring face
yawning face: yawn, tired yawning face
smiling face with tear: touched face, grateful face
partying face: party face, birthday face
woozy face: tipsy face, drunk face
hot face: sweating face, overheated face
cold face: freezing face, frozen face
ninja: shinobi
disguised face: incognito face, disguise
pleading face: puppy eyes, begging face
sari: saree
lab coat: white coat
goggles: safety goggles, swimming goggles
hiking boot: walking boot
flat shoe: ballet flat, slipper
crab: red crab
lion: lion face, lion head
scorpion: stinger
turkey: wild turkey
unicorn: unicorn face, magical horse
eagle: bald eagle, bird of prey
duck: mallard, duckling
bat: flying bat, vampire bat
shark: great white shark
owl: night owl, barn owl
fox: fox face, red fox
butterfly: monarch butterfly
deer: stag, reindeer
gorilla: silverback, great ape
lizard: gecko, iguana
rhinoceros: rhino
shrimp: prawn
squid: calamari
giraffe: tall giraffe
zebra: striped horse
hedgehog: porcupine
sauropod: brontosaurus, long-neck dinosaur, diplodocus
T-Rex: tyrannosaurus, dinosaur
cricket: grasshopper
kangaroo: roo, wallaby
llama: alpaca
peacock: peafowl
hippopotamus: hippo
parrot: macaw, parakeet
raccoon: racoon
lobster: red lobster
mosquito: gnat, midge
microbe: germ, bacterium, virus
badger: honey badger
swan: white swan
mammoth: woolly mammoth
dodo: dodo bird
sloth: tree sloth
otter: sea otter
orangutan: orang-utan
skunk: polecat
flamingo: pink flamingo
oyster: pearl oyster, clam
beaver: dam builder
bison: american bison
seal: sea lion
guide dog: seeing eye dog, service dog
white cane: blind cane, walking cane
bone: dog bone
leg: human leg
foot: human foot
tooth: molar
superhero: caped hero, hero
supervillain: villain
safety vest: hi-vis vest, high-visibility vest
ear with hearing aid: hearing aid
motorized wheelchair: electric wheelchair, power chair
manual wheelchair: wheelchair
mechanical arm: robot arm, prosthetic arm
mechanical leg: robot leg, prosthetic leg
cheese wedge: cheese, wedge of cheese
cupcake: muffin, fairy cake
salt: salt shaker
beverage box: juice box
garlic: garlic bulb
onion: brown onion
falafel: falafel balls
waffle: belgian waffle
butter: pat of butter, stick of butter
mate: yerba mate
ice: ice cube, ice cubes
bubble tea: boba, pearl milk tea
troll: forest troll
person standing: standing person
person kneeling: kneeling person
deaf person: sign language
face with monocle: monocle face, posh face
person: adult
bearded person: man with beard
woman with headscarf: hijab, woman wearing hijab
person in steamy room: sauna, sauna person
person climbing: climber, rock climber
person in lotus position: yoga, meditation, meditating person
mage: wizard, sorcerer
fairy: pixie, sprite
vampire: dracula
merperson: mermaid, merman
elf: pointy-eared elf
genie: djinn, jinn
zombie: undead, walking dead
brain: human brain
orange heart: orange love heart
billed cap: baseball cap, cap
scarf: muffler, winter scarf
gloves: mittens, pair of gloves
coat: jacket, overcoat
socks: pair of socks, stockings
red envelope: hongbao, lucky red envelope
firecracker: dynamite stick, banger
puzzle piece: jigsaw piece, jigsaw
test tube: vial, lab tube
petri dish: culture dish
dna: double helix
compass: navigation compass
abacus: counting frame
fire extinguisher: extinguisher
toolbox: tool box, tool kit
brick: bricks, brick wall
magnet: horseshoe magnet
luggage: suitcase
lotion bottle: lotion, pump bottle
thread: spool of thread, cotton reel
yarn: ball of yarn, ball of wool
safety pin: nappy pin
teddy bear: teddy, stuffed bear
broom: broomstick, witch's broom
basket: wicker basket
roll of paper: toilet paper, toilet roll
soap: bar of soap
sponge: kitchen sponge
receipt: bill, till receipt
nazar amulet: evil eye, blue eye amulet
ballet shoes: pointe shoes
one-piece swimsuit: swimsuit, bathing suit
briefs: swim briefs, swimming trunks
shorts: swim shorts, board shorts
thong sandal: flip-flop, flip flop
light blue heart: sky blue heart, baby blue heart
grey heart: gray heart, silver heart
pink heart: pink love heart
drop of blood: blood drop, blood
adhesive bandage: plaster, band-aid
stethoscope: doctor's stethoscope
x-ray: radiograph, x-ray film
crutch: walking crutch
yo-yo: yoyo
kite: flying kite
parachute: paraglider
boomerang: throwing stick
magic wand: wand, fairy wand
nesting dolls: matryoshka, russian dolls
maracas: shakers
flute: recorder, fife
ringed planet: saturn, planet
chair: wooden chair
razor: shaver
axe: hatchet
diya lamp: oil lamp, diwali lamp
banjo: string instrument
military helmet: army helmet, soldier's helmet
accordion: squeezebox
long drum: djembe
coin: gold coin
carpentry saw: handsaw, saw
screwdriver: phillips screwdriver
ladder: stepladder
hook: fish hook, grappling hook
mirror: hand mirror, looking glass
window: window pane
plunger: toilet plunger
sewing needle: needle and thread
knot: rope knot, rope
bucket: pail
mouse trap: mousetrap
toothbrush: tooth brush
headstone: gravestone, tombstone
placard: sign, picket sign
rock: boulder, stone
mirror ball: disco ball
identification card: id card
low battery: empty battery, dead battery
hamsa: hand of fatima
folding hand fan: hand fan, fan
hair pick: afro comb, comb
fly: housefly
worm: earthworm
beetle: green beetle, scarab
cockroach: roach
potted plant: house plant, houseplant
wood: log, firewood
feather: quill, plume
lotus: water lily, lotus flower
empty nest: nest, bird's nest
nest with eggs: eggs in a nest
hyacinth: purple flower
jellyfish: jelly, medusa
wing: angel wing, bird wing
goose: honking goose
anatomical heart: real heart, human heart
lungs: human lungs
people hugging: hug, embrace
person with crown: monarch, royal
moose: elk
donkey: mule, burro
blueberries: bilberries, blueberry
bell pepper: green pepper, capsicum
olive: olives, green olive
flatbread: naan, pita
tamale: corn husk wrap
fondue: cheese fondue
teapot: tea pot, kettle
pouring liquid: spilling glass
jar: glass jar, mason jar
ginger root: ginger
pea pod: peas, green peas
melting face: melting smiley
saluting face: salute
face with peeking eye: peeking face
face with diagonal mouth: unsure face, meh face
dotted line face: invisible face, fading face
biting lip: lip bite, nervous lip
bubbles: soap bubbles
shaking face: trembling face, shocked shaking face
palm down hand: hand palm down
palm up hand: offering hand, open palm up
index pointing at the viewer: pointing at you, you
heart hands: heart gesture, love hands
"""
)

# Aliases from the `emoji` package (and automatic synonyms) that are shortcode jargon,
# misleading, or not a noun phrase. Besides these, aliases with "heavy", with a colour
# word the name lacks, or that are a single "-ing" word are dropped.
BAD_ALIASES: frozenset[str] = frozenset(
    line.strip()
    for line in """
    tada
    koko
    hankey
    shit
    fu
    moyai
    hocho
    mega
    izakaya lantern
    flags
    feet
    gun
    harambe
    flipper
    iphone
    mag
    compression
    metal
    rice scene
    stars
    hugs
    no mouth
    no good
    cold sweat
    roll eyes
    loud sound
    birthday
    sunny
    point up
    point down
    multiply
    flower
    unlock
    innocent
    anger
    art
    exclamation
    earth americas
    """.strip().splitlines()
)


# Coarse categories (the `emoji` package has none): codepoint ranges, first match wins.
_CATEGORY_SPANS: tuple[tuple[int, int, str], ...] = (
    # single codepoints and small runs that differ from the block around them
    (0x2602, 0x2604, "sky & weather"),
    (0x260E, 0x260E, "object"),
    (0x2615, 0x2615, "drink"),
    (0x2618, 0x2618, "plant"),
    (0x261D, 0x261D, "body"),
    (0x2620, 0x2620, "smiley"),
    (0x2639, 0x2639, "smiley"),
    (0x265F, 0x2666, "activity"),
    (0x2668, 0x2668, "place"),
    (0x2695, 0x2695, "symbol"),
    (0x2692, 0x2699, "object"),
    (0x26A1, 0x26A1, "sky & weather"),
    (0x26AA, 0x26AB, "shape"),
    (0x26B0, 0x26B1, "object"),
    (0x26BD, 0x26BE, "activity"),
    (0x26C5, 0x26C5, "sky & weather"),
    (0x26CF, 0x26CF, "object"),
    (0x26D1, 0x26D1, "clothing"),
    (0x26D3, 0x26D3, "object"),
    (0x26E9, 0x26F0, "place"),
    (0x26F1, 0x26F1, "sky & weather"),
    (0x26F2, 0x26F2, "place"),
    (0x26F3, 0x26F3, "activity"),
    (0x26F4, 0x26F5, "transport"),
    (0x26F7, 0x26F7, "person"),
    (0x26F8, 0x26F8, "activity"),
    (0x26F9, 0x26F9, "person"),
    (0x26FA, 0x26FA, "place"),
    (0x26FD, 0x26FD, "transport"),
    (0x2702, 0x2702, "object"),
    (0x2708, 0x2708, "transport"),
    (0x2709, 0x2709, "object"),
    (0x270A, 0x270D, "body"),
    (0x270F, 0x2712, "object"),
    (0x2728, 0x2728, "celebration"),
    (0x2744, 0x2744, "sky & weather"),
    (0x2763, 0x2764, "heart"),
    (0x2B1B, 0x2B1C, "shape"),
    (0x2B50, 0x2B50, "sky & weather"),
    (0x2B55, 0x2B55, "shape"),
    (0x231A, 0x23F2, "object"),
    (0x2600, 0x2601, "sky & weather"),
    (0x2600, 0x2BFF, "symbol"),
    (0x1F004, 0x1F0CF, "activity"),
    (0x1F301, 0x1F301, "place"),
    (0x1F303, 0x1F309, "place"),
    (0x1F30B, 0x1F30B, "place"),
    (0x1F30D, 0x1F310, "place"),
    (0x1F300, 0x1F32C, "sky & weather"),
    (0x1F330, 0x1F330, "food"),
    (0x1F331, 0x1F343, "plant"),
    (0x1F375, 0x1F37C, "drink"),
    (0x1F37E, 0x1F37E, "drink"),
    (0x1F32D, 0x1F37F, "food"),
    (0x1F392, 0x1F393, "clothing"),
    (0x1F380, 0x1F393, "celebration"),
    (0x1F396, 0x1F396, "activity"),
    (0x1F397, 0x1F397, "celebration"),
    (0x1F399, 0x1F39B, "music"),
    (0x1F39E, 0x1F39F, "object"),
    (0x1F3A0, 0x1F3A2, "place"),
    (0x1F3A4, 0x1F3A4, "music"),
    (0x1F3A5, 0x1F3A5, "object"),
    (0x1F3A6, 0x1F3A6, "symbol"),
    (0x1F3A7, 0x1F3A7, "music"),
    (0x1F3A9, 0x1F3A9, "clothing"),
    (0x1F3AA, 0x1F3AA, "place"),
    (0x1F3AB, 0x1F3AB, "celebration"),
    (0x1F3AC, 0x1F3AC, "object"),
    (0x1F3B5, 0x1F3BC, "music"),
    (0x1F3BD, 0x1F3BD, "clothing"),
    (0x1F3C2, 0x1F3C4, "person"),
    (0x1F3C7, 0x1F3C7, "person"),
    (0x1F3CA, 0x1F3CC, "person"),
    (0x1F3CD, 0x1F3CE, "transport"),
    (0x1F3D4, 0x1F3F0, "place"),
    (0x1F3F3, 0x1F3F4, "symbol"),
    (0x1F3F5, 0x1F3F5, "plant"),
    (0x1F3F7, 0x1F3F7, "object"),
    (0x1F3F9, 0x1F3FA, "object"),
    (0x1F3A0, 0x1F3FA, "activity"),
    (0x1F400, 0x1F43F, "animal"),
    (0x1F440, 0x1F450, "body"),
    (0x1F451, 0x1F462, "clothing"),
    (0x1F463, 0x1F463, "body"),
    (0x1F479, 0x1F480, "smiley"),
    (0x1F484, 0x1F484, "clothing"),
    (0x1F485, 0x1F485, "body"),
    (0x1F464, 0x1F487, "person"),
    (0x1F488, 0x1F488, "place"),
    (0x1F489, 0x1F48A, "object"),
    (0x1F48B, 0x1F48C, "heart"),
    (0x1F48D, 0x1F48E, "clothing"),
    (0x1F48F, 0x1F48F, "person"),
    (0x1F490, 0x1F490, "plant"),
    (0x1F491, 0x1F491, "person"),
    (0x1F492, 0x1F492, "place"),
    (0x1F493, 0x1F49F, "heart"),
    (0x1F4A0, 0x1F4A0, "shape"),
    (0x1F4A1, 0x1F4A1, "object"),
    (0x1F4A3, 0x1F4A3, "object"),
    (0x1F4A7, 0x1F4A7, "sky & weather"),
    (0x1F4A9, 0x1F4A9, "smiley"),
    (0x1F4AA, 0x1F4AA, "body"),
    (0x1F4AE, 0x1F4AE, "plant"),
    (0x1F4A2, 0x1F4AF, "symbol"),
    (0x1F4B0, 0x1F4FF, "object"),
    (0x1F525, 0x1F525, "sky & weather"),
    (0x1F507, 0x1F52E, "object"),
    (0x1F531, 0x1F531, "symbol"),
    (0x1F534, 0x1F53A, "shape"),
    (0x1F54A, 0x1F54A, "animal"),
    (0x1F54B, 0x1F54D, "place"),
    (0x1F54E, 0x1F573, "object"),
    (0x1F574, 0x1F575, "person"),
    (0x1F576, 0x1F576, "clothing"),
    (0x1F577, 0x1F578, "animal"),
    (0x1F579, 0x1F579, "activity"),
    (0x1F57A, 0x1F57A, "person"),
    (0x1F590, 0x1F596, "body"),
    (0x1F5A4, 0x1F5A4, "heart"),
    (0x1F5E3, 0x1F5E3, "person"),
    (0x1F5EF, 0x1F5EF, "symbol"),
    (0x1F5FA, 0x1F5FF, "place"),
    (0x1F587, 0x1F5F3, "object"),
    (0x1F648, 0x1F64A, "smiley"),
    (0x1F64C, 0x1F64C, "body"),
    (0x1F64F, 0x1F64F, "body"),
    (0x1F600, 0x1F644, "smiley"),
    (0x1F645, 0x1F64F, "person"),
    (0x1F6A3, 0x1F6A3, "person"),
    (0x1F6A9, 0x1F6A9, "symbol"),
    (0x1F6AA, 0x1F6AA, "object"),
    (0x1F6AB, 0x1F6AB, "symbol"),
    (0x1F6AC, 0x1F6AC, "object"),
    (0x1F6B4, 0x1F6B6, "person"),
    (0x1F6B8, 0x1F6B8, "symbol"),
    (0x1F6C0, 0x1F6C0, "person"),
    (0x1F6CC, 0x1F6CC, "person"),
    (0x1F6BD, 0x1F6CF, "object"),
    (0x1F6D1, 0x1F6D1, "transport"),
    (0x1F6D2, 0x1F6D2, "object"),
    (0x1F6D5, 0x1F6D6, "place"),
    (0x1F6DC, 0x1F6DC, "symbol"),
    (0x1F6DD, 0x1F6DD, "place"),
    (0x1F6E0, 0x1F6E1, "object"),
    (0x1F680, 0x1F6FC, "transport"),
    (0x1F7E0, 0x1F7EB, "shape"),
    (0x1F90D, 0x1F90E, "heart"),
    (0x1F90C, 0x1F90F, "body"),
    (0x1F918, 0x1F91F, "body"),
    (0x1F926, 0x1F926, "person"),
    (0x1F910, 0x1F92F, "smiley"),
    (0x1F932, 0x1F933, "body"),
    (0x1F930, 0x1F93E, "person"),
    (0x1F940, 0x1F940, "plant"),
    (0x1F941, 0x1F941, "music"),
    (0x1F942, 0x1F943, "drink"),
    (0x1F944, 0x1F944, "food"),
    (0x1F93F, 0x1F94F, "activity"),
    (0x1F95B, 0x1F95B, "drink"),
    (0x1F964, 0x1F964, "drink"),
    (0x1F950, 0x1F96F, "food"),
    (0x1F977, 0x1F977, "person"),
    (0x1F970, 0x1F97A, "smiley"),
    (0x1F97B, 0x1F97F, "clothing"),
    (0x1F980, 0x1F9AE, "animal"),
    (0x1F9AF, 0x1F9AF, "object"),
    (0x1F9B8, 0x1F9B9, "person"),
    (0x1F9BA, 0x1F9BA, "clothing"),
    (0x1F9BC, 0x1F9BD, "transport"),
    (0x1F9B4, 0x1F9BF, "body"),
    (0x1F9C3, 0x1F9C3, "drink"),
    (0x1F9C9, 0x1F9CB, "drink"),
    (0x1F9C0, 0x1F9CB, "food"),
    (0x1F9D0, 0x1F9D0, "smiley"),
    (0x1F9CC, 0x1F9DF, "person"),
    (0x1F9E0, 0x1F9E0, "body"),
    (0x1F9E1, 0x1F9E1, "heart"),
    (0x1F9E2, 0x1F9E6, "clothing"),
    (0x1F9E7, 0x1F9E8, "celebration"),
    (0x1F9E9, 0x1F9E9, "activity"),
    (0x1F9F8, 0x1F9F8, "activity"),
    (0x1F9EA, 0x1F9FF, "object"),
    (0x1FA70, 0x1FA74, "clothing"),
    (0x1FA75, 0x1FA77, "heart"),
    (0x1FA78, 0x1FA7C, "object"),
    (0x1FA82, 0x1FA82, "transport"),
    (0x1FA83, 0x1FA83, "object"),
    (0x1FA87, 0x1FA88, "music"),
    (0x1FA80, 0x1FA88, "activity"),
    (0x1FA90, 0x1FA90, "sky & weather"),
    (0x1FA95, 0x1FA95, "music"),
    (0x1FA96, 0x1FA96, "clothing"),
    (0x1FA97, 0x1FA98, "music"),
    (0x1FA91, 0x1FAAE, "object"),
    (0x1FAB4, 0x1FAB5, "plant"),
    (0x1FAB7, 0x1FAB7, "plant"),
    (0x1FAB9, 0x1FABB, "plant"),
    (0x1FAB0, 0x1FABF, "animal"),
    (0x1FAC0, 0x1FAC1, "body"),
    (0x1FAC2, 0x1FAC5, "person"),
    (0x1FACE, 0x1FACF, "animal"),
    (0x1FAD6, 0x1FAD7, "drink"),
    (0x1FAD0, 0x1FADB, "food"),
    (0x1FAE6, 0x1FAE6, "body"),
    (0x1FAE7, 0x1FAE7, "object"),
    (0x1FAE0, 0x1FAE8, "smiley"),
    (0x1FAF3, 0x1FAF6, "body"),
)


def category(cp: int) -> str:
    """Coarse category of an emoji codepoint ("animal", "food", "smiley", ...)."""
    for lo, hi, cat in _CATEGORY_SPANS:
        if lo <= cp <= hi:
            return cat
    return "other"
